"""Load a trained model without unpickling anything from its zip.

An SB3 model zip keeps the algorithm's attributes in its ``data`` entry as JSON, but the values JSON cannot
hold (policy class, spaces, learning-rate and clip-range schedules, ...) are base64 cloudpickles, which
``ALGO.load`` unpickles: loading an untrusted zip that way runs whatever code its author put in it.

:func:`load_model_safely` trusts only the run's plain-text ``config.yml`` (safe-loaded YAML) and the tensors
of the zip: it rebuilds the model from the config, as ``train.py`` built it, then reads ``policy.pth`` with
``torch.load(..., weights_only=True)`` and loads it strictly into the rebuilt policy. The import paths of the
config (``policy``, ``features_extractor_class``) are code too, so only classes of the packages in
:data:`ALLOWED_PACKAGES` are imported. See ``docs/safe_loading.md``.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import get_device

from maskrl.agents.envs import make_vec_env
from maskrl.agents.hyperparams import import_object, load_yaml, resolve_algo_kwargs
from maskrl.agents.registry import get_algo
from maskrl.envs.wrappers import MASK_KEYS

#: The packages whose classes a run config may name: importing a module runs its code, so an import path in
#: an untrusted config is as dangerous as a pickle unless it is restricted to code we already trust.
ALLOWED_PACKAGES = ("maskrl", "stable_baselines3", "sb3_contrib", "torch.nn")
POLICY_FILE = "policy.pth"
CONFIG_FILE = "config.yml"
#: How many mismatching parameter names an error message lists before eliding the rest.
_MAX_NAMES = 3


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
            "(use --unsafe-load for a run you trust)"
        )
    try:
        obj = import_object(path)
    except ValueError as error:
        raise SafeLoadError(f"{what}: {error}") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise SafeLoadError(f"{what} {path!r} is not a subclass of {base.__name__}")
    return obj


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read and check a run folder's ``config.yml`` (YAML safe loader: plain data only)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise SafeLoadError(f"no {CONFIG_FILE} in {run_dir}: cannot rebuild the model safely")
    config = load_yaml(path)
    if not isinstance(config, dict) or "algo" not in config or "env" not in config:
        raise SafeLoadError(f"{path} is not a maskrl run config (it needs 'algo' and 'env')")
    return config


def build_model(config: dict[str, Any], device: torch.device | str = "cpu") -> BaseAlgorithm:
    """Build an untrained model exactly as ``train.py`` built the run's one, from plain config values only.

    :param config: a run's ``config.yml`` (``algo``, ``env``, ``env_kwargs``, ``hyperparams``)
    :param device: torch device of the model
    :raises SafeLoadError: for an unknown algo or env, a refused import path or bad hyperparameters
    """
    try:
        spec = get_algo(config["algo"])
    except ValueError as error:
        raise SafeLoadError(str(error)) from None
    hyperparams = dict(config.get("hyperparams") or {})
    if not isinstance(hyperparams.get("policy_kwargs") or {}, dict):
        raise SafeLoadError("hyperparams.policy_kwargs must be a mapping")
    policy_kwargs = dict(hyperparams.get("policy_kwargs") or {})
    # Resolve the import paths ourselves, with the allow-list, before resolve_algo_kwargs would import them.
    if "features_extractor_class" in policy_kwargs:
        policy_kwargs["features_extractor_class"] = import_allowed_class(
            policy_kwargs["features_extractor_class"], BaseFeaturesExtractor, "policy_kwargs.features_extractor_class"
        )
    policy_path = hyperparams.pop("policy", None)
    policy = None if policy_path is None else import_allowed_class(policy_path, BasePolicy, "policy")
    try:
        algo_kwargs = resolve_algo_kwargs({**hyperparams, "policy_kwargs": policy_kwargs})
        # One env is enough: it only gives the spaces (and makes the returned model usable with learn()).
        env = make_vec_env(config["env"], 1, None, "dummy", config.get("env_kwargs") or {}, sees_mask=spec.sees_mask)
    except ValueError as error:
        raise SafeLoadError(str(error)) from None
    if policy is None:
        policy = spec.policy_for(_n_feature_keys(env.observation_space) > 1)
    try:
        # No seed: seeding would reset the global RNGs as a side effect, and the weights are overwritten anyway.
        return spec.algo_class(policy, env, device=device, verbose=0, **algo_kwargs)
    except (TypeError, ValueError) as error:
        env.close()
        raise SafeLoadError(f"bad hyperparameters for {config['algo']} in the run config: {error}") from None


def read_policy_state(model_path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read the policy's ``state_dict`` from an SB3 model zip, tensors only (``weights_only=True``).

    :raises SafeLoadError: for a missing, truncated or corrupt zip, or one without ``policy.pth``
    """
    if not model_path.is_file():
        raise SafeLoadError(f"model file not found: {model_path}")
    try:
        with zipfile.ZipFile(model_path) as archive:
            if POLICY_FILE not in archive.namelist():
                raise SafeLoadError(f"cannot load {model_path}: no {POLICY_FILE} in it (not an SB3 model?)")
            raw = archive.read(POLICY_FILE)  # checks the CRC, so a damaged entry fails here
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise SafeLoadError(f"cannot load {model_path}: corrupt or not a zip ({type(error).__name__})") from None
    try:
        # weights_only: torch's restricted unpickler, which only rebuilds tensors and plain containers.
        state = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SafeLoadError(f"cannot load {POLICY_FILE} of {model_path}: {first_line}") from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise SafeLoadError(f"{POLICY_FILE} of {model_path} is not a state dict of named tensors")
    return state


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
            f"the weights in {model_path} do not fit the policy rebuilt from {CONFIG_FILE} ({'; '.join(problems)}); "
            "was it trained with another config or env kwargs?"
        )


def load_model_safely(
    run_dir_or_zip: str | Path, config: dict[str, Any] | None = None, device: torch.device | str = "cpu"
) -> BaseAlgorithm:
    """Load a run's model without unpickling the zip's ``data``: rebuild it from the config, then load the tensors.

    :param run_dir_or_zip: a run folder (its ``best_model.zip``, else ``final_model.zip``) or a model zip
    :param config: the run's config; read from the ``config.yml`` next to the zip when ``None``
    :param device: torch device (``"auto"`` picks CUDA when available)
    :return: the model, with its policy weights (not its optimizer state) and ``num_timesteps`` restored
    :raises SafeLoadError: (a ``ValueError``) in one line, for every file or config problem
    """
    path = Path(run_dir_or_zip)
    if path.is_dir():
        model_path = next(
            (path / name for name in ("best_model.zip", "final_model.zip") if (path / name).is_file()), None
        )
        if model_path is None:
            raise SafeLoadError(f"no model in {path} (expected best_model.zip or final_model.zip)")
    else:
        model_path = path
    if config is None:
        config = read_config(model_path.parent)
    device = get_device(device)
    # Read the tensors first: a broken zip is reported before the (slower) model is built.
    state = read_policy_state(model_path, device)
    model = build_model(config, device)
    check_state_dict(model.policy.state_dict(), state, model_path)
    model.policy.load_state_dict(state, strict=True)
    model.num_timesteps = _plain_int_field(model_path, "num_timesteps")
    return model


def _plain_int_field(model_path: Path, key: str) -> int:
    """An integer field of the zip's ``data`` JSON (0 if absent); read as text, nothing in it is unpickled."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            value = json.loads(archive.read("data")).get(key)
    except (KeyError, zipfile.BadZipFile, OSError, ValueError, AttributeError):
        return 0  # the field is informative only: the weights have loaded
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _n_feature_keys(space: spaces.Space) -> int:
    # Same rule as train.py (not imported from there: train.py imports maskrl.evaluate, which imports us).
    if isinstance(space, spaces.Dict):
        return sum(key not in MASK_KEYS for key in space.spaces)
    return 1
