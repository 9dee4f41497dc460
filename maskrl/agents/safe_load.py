"""Load a trained model without running code from its run folder: no unpickling, no imports it chooses.

An SB3 model zip keeps the algorithm's attributes in its ``data`` entry as JSON, but the values JSON cannot
hold (policy class, spaces, learning-rate and clip-range schedules, ...) are base64 cloudpickles, which
``ALGO.load`` unpickles: loading an untrusted zip that way runs whatever code its author put in it.

:func:`load_model_safely` trusts only the run's plain-text ``config.yml`` (safe-loaded YAML) and the tensors
of the zip: it rebuilds the model from the config, as ``train.py`` built it, then reads ``policy.pth`` with
``torch.load(..., weights_only=True)`` and loads it strictly into the rebuilt policy. The config's fields that
name code are restricted: import paths (``policy``, ``features_extractor_class``) to classes of the packages in
:data:`ALLOWED_PACKAGES`, the env id to ids already registered with gymnasium (``module:EnvId`` would make
gymnasium import ``module``). The folder's files are read within bounds (:mod:`maskrl.untrusted`: sizes, zip
directories, symlinks leading out of the folder). See ``docs/safe_loading.md``.
"""

from __future__ import annotations

import functools
import itertools
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import get_device

# Importing env_setup registers maskrl's envs with gymnasium.
from maskrl.agents.env_setup import check_pettingzoo_id, is_pettingzoo_id, make_masked_vec_env
from maskrl.agents.hyperparams import MAX_YAML_NODES, HyperparameterError, import_object, load_yaml
from maskrl.agents.registry import AlgoSpec, build_model, get_algo
from maskrl.agents.run_folder import RunFolder
from maskrl.masks import MASK_KEYS
from maskrl.untrusted import (
    MAX_JSON_BYTES,
    MAX_WEIGHTS_BYTES,
    ZIP_ERRORS,
    UntrustedFileError,
    check_inside,
    check_zip_members,
    first_line,
    load_state_dict_bytes,
    parse_json,
    read_zip_member,
)

#: The packages whose classes a run config may name: importing a module runs its code, so an import path in
#: an untrusted config is as dangerous as a pickle unless it is restricted to code we already trust.
ALLOWED_PACKAGES = ("maskrl", "stable_baselines3", "sb3_contrib", "torch.nn")
POLICY_FILE = "policy.pth"
DATA_FILE = "data"
#: Largest model zip opened (its directory is read whole); a model of this project is well under 1 MB.
MAX_MODEL_BYTES = 4 << 30
#: Entries of a model zip: SB3 writes 6.
MAX_MODEL_MEMBERS = 64
#: How many mismatching parameter names an error message lists before eliding the rest.
_MAX_NAMES = 3
_UNSAFE_HINT = "use --unsafe-load for a run you trust"


class SafeLoadError(ValueError):
    """A model that cannot be loaded safely: bad file, bad config or weights that do not fit. One line."""


def is_allowed_import_path(path: str) -> bool:
    """Whether ``path`` (``package.module:Name`` or ``package.module.Name``) lies in :data:`ALLOWED_PACKAGES`."""
    module_name, sep, _ = path.partition(":")
    if not sep:
        module_name = path.rpartition(".")[0]
    return any(module_name == package or module_name.startswith(f"{package}.") for package in ALLOWED_PACKAGES)


def import_allowed_class(path: Any, base: type, what: str) -> type:
    """Import the class ``path`` names, refusing paths outside :data:`ALLOWED_PACKAGES` *before* importing.

    :param path: the import path from the config
    :param base: the class it must be a subclass of (so that no other callable of an allowed module, e.g. a
        function re-exported there, can be called with the config's keyword arguments)
    :param what: the config key, for error messages
    :raises SafeLoadError: for a path outside the allowed packages, an unimportable one or a wrong class
    """
    if not isinstance(path, str):
        raise SafeLoadError(f"{what} must be an import path string, got {type(path).__name__}")
    if not is_allowed_import_path(path):
        raise SafeLoadError(
            f"refusing to import {what} {path!r}: the safe loader only imports from {', '.join(ALLOWED_PACKAGES)} "
            f"({_UNSAFE_HINT})"
        )
    try:
        obj = import_object(path)
    except ValueError as error:
        raise SafeLoadError(f"{what}: {error}") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise SafeLoadError(f"{what} {path!r} is not a subclass of {base.__name__}")
    return obj


def check_env_id(env_id: Any, what: str = f"env of {RunFolder.CONFIG}") -> str:
    """Accept only an env id that gymnasium can make without importing anything new.

    ``gym.make("module:EnvId")`` imports ``module`` before looking the id up, and the current folder (or a run
    folder's parent) is often on ``sys.path``: a run folder shipping ``payload.py`` with ``env: payload:X`` would run
    it. An id already in gymnasium's registry was registered by code the user imported (maskrl's own envs,
    gymnasium's, those of packages the user imported), so making it runs only that code.

    A PettingZoo spelling (``pettingzoo:FAMILY/NAME``) is accepted when its name is plain
    (:func:`maskrl.agents.env_setup.check_pettingzoo_id`): it is looked up in PettingZoo's registries, filled by code
    the user imported, or imported as a module of the installed ``pettingzoo`` package, never from elsewhere.

    :param env_id: the id from the config
    :param what: the field, for error messages
    :return: ``env_id``
    :raises SafeLoadError: for a non-string, an id with a module prefix, or an id that is not registered
    """
    if not isinstance(env_id, str):
        raise SafeLoadError(f"{what} must be a gymnasium env id string, got {type(env_id).__name__}")
    if is_pettingzoo_id(env_id):
        try:
            check_pettingzoo_id(env_id)
        except ValueError as error:
            raise SafeLoadError(f"refusing {what} {env_id!r}: {error}") from None
        return env_id
    if ":" in env_id:
        raise SafeLoadError(
            f"refusing {what} {env_id!r}: an id with a module prefix (module:EnvId) makes gymnasium import that "
            f"module, which runs its code ({_UNSAFE_HINT})"
        )
    if env_id not in gym.envs.registry:
        raise SafeLoadError(
            f"refusing {what} {env_id!r}: no env is registered under that id, and the safe loader imports nothing "
            f"to find one ({_UNSAFE_HINT})"
        )
    return env_id


def check_config(config: Any) -> dict[str, Any]:
    """Check the shape of a run config before anything uses it: types, algo, env id, plain-data env kwargs.

    What a field means is checked where it is used (hyperparameters by :func:`build_model`); here only that the
    config cannot crash or trick the code reading it: a list where a mapping is expected, a private constructor
    argument (``_init_setup_model: false`` would build a model without a policy), an env id that imports a module.

    :return: ``config``
    :raises SafeLoadError: in one line, naming the field
    """
    if not isinstance(config, dict) or "algo" not in config or "env" not in config:
        raise SafeLoadError("the run config is not a maskrl run config (it needs 'algo' and 'env')")
    if not isinstance(config["algo"], str):
        raise SafeLoadError(f"algo of {RunFolder.CONFIG} must be a string, got {type(config['algo']).__name__}")
    try:
        get_algo(config["algo"])
    except ValueError as error:
        raise SafeLoadError(str(error)) from None
    check_env_id(config["env"])
    env_kwargs = _mapping(config.get("env_kwargs"), "env_kwargs")
    _check_plain_data(env_kwargs, "env_kwargs")
    hyperparams = _mapping(config.get("hyperparams"), "hyperparams")
    private = sorted(key for key in hyperparams if key.startswith("_"))
    if private:
        raise SafeLoadError(f"refusing hyperparams.{private[0]} of {RunFolder.CONFIG}: private constructor arguments")
    _mapping(hyperparams.get("policy_kwargs"), "hyperparams.policy_kwargs")
    return config


def _mapping(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a mapping with string keys (``None`` or absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SafeLoadError(f"{what} of {RunFolder.CONFIG} must be a mapping, got {type(value).__name__}")
    bad = [key for key in value if not isinstance(key, str)]
    if bad:
        raise SafeLoadError(f"{what} of {RunFolder.CONFIG} has a key that is not a string: {bad[0]!r}")
    return value


def _check_plain_data(value: Any, what: str) -> None:
    """Refuse anything but strings, numbers, booleans, ``None``, lists and string-keyed mappings.

    The safe YAML loader also makes dates, sets and bytes: harmless, but not what an env constructor takes, and a
    config given as a Python dict could hold anything. The walk is bounded like the YAML loader's expansion.
    """
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise SafeLoadError(f"{what} of {RunFolder.CONFIG} holds more than {MAX_YAML_NODES} values")
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise SafeLoadError(f"{what} of {RunFolder.CONFIG} has a key that is not a string")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise SafeLoadError(f"{what} of {RunFolder.CONFIG} holds a {type(item).__name__}: only plain YAML data")


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read a run folder's ``config.yml``: safe YAML, bounded (size, alias expansion), not through a symlink out.

    Only the shape is checked (a mapping with ``algo`` and ``env``): :func:`check_config` checks the fields, which
    ``--unsafe-load`` skips.

    :raises SafeLoadError: in one line
    """
    path = RunFolder(run_dir).config
    if not (path.exists() or path.is_symlink()):
        raise SafeLoadError(f"no {RunFolder.CONFIG} in {run_dir}: cannot rebuild the model safely")
    try:
        check_inside(path, run_dir, RunFolder.CONFIG)
        config = load_yaml(path)
    except ValueError as error:  # UntrustedFileError and the YAML loader's errors
        raise SafeLoadError(str(error)) from None
    if not isinstance(config, dict) or "algo" not in config or "env" not in config:
        raise SafeLoadError(f"{path} is not a maskrl run config (it needs 'algo' and 'env')")
    return config


def rebuild_model(config: dict[str, Any], device: torch.device | str = "cpu") -> BaseAlgorithm:
    """Build an untrained model exactly as ``train.py`` built the run's one, from plain config values only.

    The model is built by :func:`maskrl.agents.registry.build_model`, as in training, but every import path of the
    config goes through the allow-list (:func:`import_allowed_class`), which refuses before importing.

    :param config: a run's ``config.yml`` (``algo``, ``env``, ``env_kwargs``, ``hyperparams``)
    :param device: torch device of the model
    :raises SafeLoadError: for an unknown algo or env, a refused import path or env id, or bad hyperparameters
    """
    check_config(config)
    spec = get_algo(config["algo"])
    hyperparams = dict(config.get("hyperparams") or {})
    policy_path = hyperparams.pop("policy", None)
    policy = None if policy_path is None else import_allowed_class(policy_path, BasePolicy, "policy")
    try:
        # One env is enough: it only gives the spaces (and makes the returned model usable with learn()).
        env = make_masked_vec_env(
            config["env"], 1, None, "dummy", config.get("env_kwargs") or {}, sees_mask=spec.sees_mask
        )
    except Exception as error:  # the env constructor got the config's kwargs: any failure is theirs
        raise SafeLoadError(
            f"cannot make env {config['env']!r} with the env_kwargs of {RunFolder.CONFIG}: {first_line(error)}"
        ) from None
    hyperparams["policy"] = _legacy_default_policy(spec, env.observation_space) if policy is None else policy
    # The features extractor's import path goes through the allow-list too.
    import_extractor = functools.partial(
        import_allowed_class, base=BaseFeaturesExtractor, what="policy_kwargs.features_extractor_class"
    )
    try:
        # No seed: seeding would reset the global RNGs as a side effect, and the weights are overwritten anyway.
        return build_model(config["algo"], env, hyperparams, device=device, import_class=import_extractor)
    except HyperparameterError as error:
        env.close()
        raise SafeLoadError(str(error)) from None
    except Exception as error:  # the config's values: TypeError, SB3's asserts, MemoryError, ...
        env.close()
        raise SafeLoadError(
            f"bad hyperparameters for {config['algo']} in the run config: {first_line(error)}"
        ) from None


def read_policy_state(model_path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read the policy's ``state_dict`` from an SB3 model zip, tensors only (``weights_only=True``), within bounds.

    The zip's directory is checked before anything is decompressed (:func:`maskrl.untrusted.check_zip_members`:
    entry names, count, declared sizes, compression ratio), then only ``policy.pth`` is read.

    :raises SafeLoadError: for a missing, truncated, corrupt, oversized or crafted zip, or one without ``policy.pth``
    """
    if not model_path.is_file():
        raise SafeLoadError(f"model file not found: {model_path}")
    if model_path.stat().st_size > MAX_MODEL_BYTES:
        raise SafeLoadError(f"cannot load {model_path}: larger than {MAX_MODEL_BYTES >> 30} GiB")
    try:
        with zipfile.ZipFile(model_path) as archive:
            # Entries other than policy.pth are never decompressed: only their names and count matter there.
            members = check_zip_members(
                archive, f"model zip {model_path}", MAX_MODEL_BYTES, 4 * MAX_MODEL_BYTES, MAX_MODEL_MEMBERS
            )
            if POLICY_FILE not in members:
                raise SafeLoadError(f"cannot load {model_path}: no {POLICY_FILE} in it (not an SB3 model?)")
            raw = read_zip_member(archive, members[POLICY_FILE], MAX_WEIGHTS_BYTES)  # checks the CRC too
    except SafeLoadError:
        raise
    except UntrustedFileError as error:
        raise SafeLoadError(str(error)) from None
    except ZIP_ERRORS as error:
        raise SafeLoadError(f"cannot load {model_path}: corrupt or not a zip ({type(error).__name__})") from None
    try:
        return load_state_dict_bytes(raw, f"{POLICY_FILE} of {model_path}", device)
    except UntrustedFileError as error:
        raise SafeLoadError(str(error)) from None


def check_state_dict(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], model_path: Path) -> None:
    """Raise a one-line :class:`SafeLoadError` naming what differs between the rebuilt policy and the weights.

    ``load_state_dict`` would say it too, but in a multi-line message listing every parameter.
    """
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = []
    for label, names in (
        ("wrong shape (zip vs rebuilt)", reshaped),
        ("missing in the zip", missing),
        ("not in the rebuilt policy", unexpected),
    ):
        if names:
            shown = ", ".join(names[:_MAX_NAMES]) + (
                f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
            )
            problems.append(f"{label}: {shown}")
    if problems:
        raise SafeLoadError(
            f"the weights in {model_path} do not fit the policy rebuilt from {RunFolder.CONFIG} "
            f"({'; '.join(problems)}); was it trained with another config or env kwargs?"
        )


def check_net_arch_fits(config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Refuse a ``net_arch`` whose hidden layers alone hold more parameters than the weights, before building it.

    The policy is built (its memory allocated and initialised) before its weights can be compared with the zip's,
    so ``net_arch: [200000, 200000]`` would ask for 160 GB first. Counting only what ``net_arch`` itself implies
    (the products of consecutive widths and the biases) gives a lower bound on the rebuilt policy's size whatever
    its features extractor: above the number of values in ``policy.pth`` it cannot fit them.

    :raises SafeLoadError: naming both counts
    """
    policy_kwargs = (config.get("hyperparams") or {}).get("policy_kwargs") or {}
    net_arch = policy_kwargs.get("net_arch")
    arches = list(net_arch.values()) if isinstance(net_arch, dict) else [net_arch]
    lower_bound = 0
    for arch in arches:
        if not isinstance(arch, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in arch):
            continue  # not widths: SB3 refuses it when building, in one line
        lower_bound += sum(a * b for a, b in itertools.pairwise(arch)) + sum(arch)
    in_weights = sum(tensor.numel() for tensor in state.values())
    if lower_bound > in_weights:
        raise SafeLoadError(
            f"hyperparams.policy_kwargs.net_arch of {RunFolder.CONFIG} implies at least {lower_bound} parameters but "
            f"{POLICY_FILE} holds {in_weights}: refusing to build it"
        )


def load_model_safely(
    run_dir_or_zip: str | Path, config: dict[str, Any] | None = None, device: torch.device | str = "cpu"
) -> BaseAlgorithm:
    """Load a run's model without unpickling the zip's ``data``: rebuild it from the config, then load the tensors.

    :param run_dir_or_zip: a run folder (its ``best_model.zip``, else ``final_model.zip``) or a model zip
    :param config: the run's config; read from the run folder of the zip when ``None`` (the folder it is in, or the
        run folder above a run's ``checkpoints/``; neither file may then be a symlink leading out of that folder)
    :param device: torch device (``"auto"`` picks CUDA when available)
    :return: the model, with its policy weights (not its optimizer state) and ``num_timesteps`` restored
    :raises SafeLoadError: (a ``ValueError``) in one line, for every file or config problem
    """
    path = Path(run_dir_or_zip)
    if path.is_dir():
        model_path = RunFolder(path).model("best")
        if model_path is None:
            raise SafeLoadError(f"no model in {path} (expected {RunFolder.BEST_MODEL} or {RunFolder.FINAL_MODEL})")
    else:
        model_path = path
    if config is None:
        run = RunFolder.of_model(model_path)
        config = read_config(run.path)
        try:
            check_inside(model_path, run.path, "model")
        except UntrustedFileError as error:
            raise SafeLoadError(str(error)) from None
    check_config(config)
    device = get_device(device)
    # Read the tensors first: a broken zip is reported before the (slower) model is built.
    state = read_policy_state(model_path, device)
    check_net_arch_fits(config, state)
    model = rebuild_model(config, device)
    check_state_dict(model.policy.state_dict(), state, model_path)
    model.policy.load_state_dict(state, strict=True)
    model.num_timesteps = _plain_int_field(model_path, "num_timesteps")
    return model


def _plain_int_field(model_path: Path, key: str) -> int:
    """An integer field of the zip's ``data`` JSON (0 if absent); read as text, nothing in it is unpickled."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            # The directory was checked by read_policy_state; read_zip_member caps the entry's size.
            data = parse_json(read_zip_member(archive, archive.getinfo(DATA_FILE), MAX_JSON_BYTES), DATA_FILE)
    except (KeyError, *ZIP_ERRORS):  # includes UntrustedFileError, a ValueError
        return 0  # the field is informative only: the weights have loaded
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _legacy_default_policy(spec: AlgoSpec, observation_space: spaces.Space) -> type | str:
    """The policy of a config without ``hyperparams.policy``: written before ``train.py`` recorded the policy it
    chose, by a ``train.py`` that chose by this rule (the multi-input policy for several feature keys)."""
    n_feature_keys = (
        sum(key not in MASK_KEYS for key in observation_space.spaces)
        if isinstance(observation_space, spaces.Dict)
        else 1
    )
    return spec.policy_for(n_feature_keys > 1)
