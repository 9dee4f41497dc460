"""Per-env hyperparameter YAML files and ``key=value`` overrides, read without ``eval``.

Each registered env has ``hyperparams/<EnvName>.yml`` (e.g. ``Kart-v0.yml``) with one section per
``--algo``. A section holds the algorithm's constructor arguments plus keys of ours:
``n_timesteps``, ``n_envs``, ``env_kwargs``, ``policy_kwargs``, ``policy`` (an importable policy class
replacing the algo's default one, e.g. ``maskrl.policies:GridNetPolicy``) and ``behaviour_cloning`` (a demonstrator
the policy imitates before training, :mod:`maskrl.agents.imitation`). Strings stand for what YAML
cannot hold: ``learning_rate: lin_0.0003`` is a linear decay to 0, ``activation_fn: relu`` a torch module,
``features_extractor_class: package.module:Class`` an importable class.

YAML is read with the safe loader (plain data, no Python tags), at most :data:`MAX_YAML_BYTES` long and at most
:data:`MAX_YAML_NODES` values once its aliases are expanded: a run's ``config.yml`` may come from anyone
(``docs/safe_loading.md``), and a few hundred bytes of nested aliases (a "billion laughs") expand to billions of
values as soon as anything walks, prints or copies them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn
import yaml
from stable_baselines3.common.utils import LinearSchedule

from maskrl.untrusted import read_bytes

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
OUR_KEYS = ("n_timesteps", "n_envs", "env_kwargs", "policy_kwargs", "policy", "behaviour_cloning")
#: the keys of ``behaviour_cloning`` (:mod:`maskrl.agents.imitation`)
CLONING_FIELDS = ("demonstrator", "steps", "epochs")
#: Largest YAML file read (a run's config.yml is about 1 kB).
MAX_YAML_BYTES = 1 << 20
#: Most values (scalars, lists, mappings) a YAML document may hold once its aliases are expanded.
MAX_YAML_NODES = 100_000

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class HyperparameterError(ValueError):
    """Hyperparameters that cannot become an algorithm's arguments (a name, schedule or import path). One line."""


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``3e-4`` as a float (YAML 1.1 wants ``3.0e-4``)."""


_SCIENTIFIC = re.compile(r"^[-+]?\d+(\.\d*)?[eE][-+]?\d+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789"))


def hyperparams_file(env_id: str) -> Path:
    """The YAML file holding ``env_id``'s hyperparameters (it may not exist)."""
    return HYPERPARAMS_DIR / f"{env_id.split('/')[-1]}.yml"


def load_yaml(path: Path, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Read a YAML file safely; every problem (syntax, size, alias bomb, nesting) is a one-line ``ValueError``.

    :param path: the file (a regular file of at most ``max_bytes`` bytes)
    :param max_bytes: largest file read
    """
    return parse_yaml(read_bytes(path, max_bytes, "YAML file"), str(path))


def parse_yaml(text: str | bytes, where: str) -> Any:
    """Parse a YAML document with the safe loader, refusing one that expands to over :data:`MAX_YAML_NODES` values.

    The document is composed into its node graph first (linear in its size: an alias is a reference to the anchored
    node, not a copy), measured, and only then turned into Python objects.

    :param text: the document
    :param where: the file name, for error messages
    :raises ValueError: in one line
    """
    loader = _Loader(text)  # _Loader is a SafeLoader
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where_line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{where} is not valid YAML{where_line}: {getattr(error, 'problem', error)}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ValueError(f"{where} is nested too deeply to be read") from None
    finally:
        loader.dispose()


def _check_expanded_size(root: yaml.Node, where: str) -> None:
    """Count the values ``root`` stands for with every alias expanded, without expanding anything.

    Iterative (a deep document must not overflow the stack here) and memoised per node, so an alias costs one
    lookup; an alias inside its own anchor (a recursive document) is refused too.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_YAML_NODES:
                raise ValueError(
                    f"{where} expands to more than {MAX_YAML_NODES} values through its aliases (a YAML bomb?)"
                )
            sizes[id(node)] = size
            in_progress.discard(id(node))
        elif id(node) not in sizes:
            if id(node) in in_progress:
                raise ValueError(f"{where} has an alias inside its own anchor (a recursive document)")
            in_progress.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def load_hyperparams(env_id: str, algo: str, path: Path | None = None) -> dict[str, Any]:
    """Return the raw hyperparameters of ``algo`` on ``env_id`` (empty if there are none).

    :param env_id: gymnasium env id
    :param algo: ``--algo`` name, the section of the file
    :param path: a YAML file to read instead of the packaged one
    """
    path = hyperparams_file(env_id) if path is None else path
    if not path.exists():
        return {}
    sections = load_yaml(path) or {}
    if not isinstance(sections, dict):
        raise ValueError(f"{path} must map algo names to hyperparameters, got {type(sections).__name__}")
    section = sections.get(algo, {}) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: section '{algo}' must be a mapping, got {type(section).__name__}")
    return dict(section)


def parse_value(text: str) -> Any:
    """Turn a command-line value into a Python value: numbers, booleans, ``null``, lists and mappings.

    Anything else stays a string. Parsed with YAML's safe loader, never ``eval``.
    """
    if _FLOAT.match(text):
        return float(text) if any(c in text for c in ".eE") else int(text)
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError:
        raise ValueError(f"cannot parse value {text!r}") from None


def parse_key_values(items: list[str] | None, what: str) -> dict[str, Any]:
    """Parse ``["k=v", ...]`` from the command line into a dict.

    :param items: the ``key=value`` strings
    :param what: the option's name, for error messages (e.g. ``--env-kwargs``)
    :raises ValueError: for an item without ``=`` or with an empty key
    """
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects key=value, got {item!r}")
        parsed[key.strip()] = parse_value(value.strip())
    return parsed


def resolve_learning_schedule(value: Any) -> Any:
    """``"lin_X"`` becomes a linear decay from ``X`` to 0; numbers pass through."""
    if isinstance(value, str):
        if value.startswith("lin_") and _FLOAT.match(value[4:]):
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        raise ValueError(f"a schedule must be a number or 'lin_<start>', got {value!r}")
    return value


def import_object(path: str) -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError, TypeError):  # TypeError: a relative path like ".module"
        raise ValueError(f"cannot import {path!r}") from None


def resolve_policy_kwargs(
    policy_kwargs: dict[str, Any], import_class: Callable[[str], Any] = import_object
) -> dict[str, Any]:
    """Replace the names in ``policy_kwargs`` by the objects they stand for.

    :param policy_kwargs: the ``policy_kwargs`` hyperparameter
    :param import_class: imports ``features_extractor_class``; the safe loader passes one that refuses paths
        outside its allowed packages before importing anything
    """
    resolved = dict(policy_kwargs)
    if isinstance(resolved.get("activation_fn"), str):
        name = resolved["activation_fn"]
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation_fn {name!r}; known: {', '.join(ACTIVATIONS)}")
        resolved["activation_fn"] = ACTIVATIONS[name]
    if isinstance(resolved.get("features_extractor_class"), str):
        resolved["features_extractor_class"] = import_class(resolved["features_extractor_class"])
    return resolved


#: constructor arguments of the SB3 algorithms that must be numbers (schedules may also be ``lin_<start>``)
NUMERIC_KEYS = (
    "gamma",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "n_steps",
    "batch_size",
    "n_epochs",
    "target_kl",
    "rms_prop_eps",
)


def check_our_keys(hyperparams: dict[str, Any]) -> None:
    """One-line ``ValueError`` for values of our own keys (and numeric SB3 arguments) of the wrong type.

    SB3 does not check types, so ``gamma=abc`` would only fail deep inside the first rollout.
    """
    for key in ("n_timesteps", "n_envs"):
        value = hyperparams.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"hyperparameter {key} must be an integer, got {value!r}")
    for key in ("env_kwargs", "policy_kwargs"):
        value = hyperparams.get(key)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"hyperparameter {key} must be a mapping like {{key: value}}, got {value!r}")
    for key in NUMERIC_KEYS:
        value = hyperparams.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"hyperparameter {key} must be a number, got {value!r}")
    if hyperparams.get("behaviour_cloning") is not None:
        check_cloning_settings(hyperparams["behaviour_cloning"])


def check_cloning_settings(value: Any) -> None:
    """One-line ``ValueError`` for a ``behaviour_cloning`` value that is not ``{demonstrator, steps, epochs}``."""
    if not isinstance(value, dict) or set(value) != set(CLONING_FIELDS):
        raise ValueError(
            f"hyperparameter behaviour_cloning must be a mapping with exactly the keys {', '.join(CLONING_FIELDS)}, "
            f"got {value!r}"
        )
    if not isinstance(value["demonstrator"], str):
        raise ValueError(
            f"behaviour_cloning.demonstrator must be an import path like package.module:function, "
            f"got {value['demonstrator']!r}"
        )
    for key in ("steps", "epochs"):
        if isinstance(value[key], bool) or not isinstance(value[key], int) or value[key] <= 0:
            raise ValueError(f"behaviour_cloning.{key} must be a positive integer, got {value[key]!r}")


def resolve_algo_kwargs(
    hyperparams: dict[str, Any], import_class: Callable[[str], Any] = import_object
) -> dict[str, Any]:
    """The algorithm's constructor arguments: our own keys removed, names and schedules resolved.

    :param hyperparams: a section of a hyperparameter file, or a run config's ``hyperparams``
    :param import_class: imports the import paths (see :func:`resolve_policy_kwargs`); the ``policy`` key is left
        to the caller
    """
    check_our_keys(hyperparams)
    kwargs = {key: value for key, value in hyperparams.items() if key not in OUR_KEYS}
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if key in kwargs:
            kwargs[key] = resolve_learning_schedule(kwargs[key])
    kwargs["policy_kwargs"] = resolve_policy_kwargs(hyperparams.get("policy_kwargs") or {}, import_class)
    return kwargs
