"""Build the (vectorised) envs an algorithm trains and is evaluated on.

An env may give its action mask in one of three ways, and :func:`make_masked_env` finds which:

- an ``"action_mask"`` key of a ``Dict`` observation (maskrl's envs, PettingZoo's convention): used as it is;
- an ``action_masks()`` method (sb3-contrib's convention): put into the observation by ``ActionMasksToObservation``;
- ``info["action_mask"]`` from ``reset`` and ``step`` (gymnasium's ``Taxi``): put into the observation by
  ``InfoActionMaskToObservation``.

An env without any mask (``CartPole-v1``, ``Pendulum-v1``, ...) is used as it is by the algorithms that need no mask.

PettingZoo envs are spelled ``pettingzoo:FAMILY/NAME`` (``pettingzoo:classic/connect_four_v3``,
``pettingzoo:maskrl/panda_herd_v0``): the name is looked up in PettingZoo's registries (parallel first), else
imported as the module ``pettingzoo.FAMILY.NAME`` (:func:`resolve_pettingzoo_id`). A parallel env trains one shared
policy through :class:`~maskrl.envs.pettingzoo_vec_env.PettingZooVecEnv` (one VecEnv slot per agent; ``--n-envs``
copies, ``--vec-env subproc`` puts each copy in a worker process); a turn-based (AEC) game trains one seat against an
opponent pool through :class:`~maskrl.envs.pettingzoo_aec.PettingZooAECEnv`, a gymnasium env like any other (its
kwargs ``opponent`` and ``seat``, the others go to the game). Gymnasium ids are untouched.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pettingzoo
from gymnasium import spaces
from pettingzoo.env_registry.exceptions import FailedToImport, PettingZooRegistryError
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import maskrl  # noqa: F401 - registers the maskrl/ envs, also inside SubprocVecEnv workers
from maskrl.envs.pettingzoo_aec import PettingZooAECEnv
from maskrl.envs.pettingzoo_vec_env import PettingZooVecEnv, check_agent_spaces
from maskrl.envs.wrappers import ActionMasksToObservation, DropMasks, InfoActionMaskToObservation
from maskrl.masks import ACTION_MASK_KEY

VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
#: Where an env's mask comes from (see the module docstring); ``None``: the env has no mask.
MASK_SOURCES = ("observation", "method", "info")
#: ``info`` key (set by :class:`MaskStats`) holding how many mask entries were valid when the action was chosen.
VALID_ACTIONS_KEY = "valid_actions"
#: Where to read how to give an env masks, for error messages.
HOW_TO_ADD_MASKS = (
    "give the env an action_masks() method returning a boolean array (sb3-contrib's convention), or return the mask "
    f"in info['{ACTION_MASK_KEY}'] from reset() and step(), or put it in a Dict observation under '{ACTION_MASK_KEY}'"
)


#: How ``--env`` names a PettingZoo env: ``pettingzoo:FAMILY/NAME``.
PETTINGZOO_PREFIX = "pettingzoo:"
PETTINGZOO_EXAMPLE = "pettingzoo:classic/connect_four_v3"
# FAMILY/NAME with PettingZoo's version suffix (_vN or -vN): names that cannot climb out of the pettingzoo package.
_PETTINGZOO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*/[A-Za-z_][A-Za-z0-9_]*(-v\d+)?")


class UnknownEnvError(ValueError):
    """An env id gymnasium does not know (the message suggests close matches)."""


@dataclass(frozen=True)
class PettingZooSpec:
    """A PettingZoo env named on the command line.

    :param env_id: the spelling, ``pettingzoo:FAMILY/NAME``
    :param kind: ``"parallel"`` (one shared policy over its agents) or ``"aec"`` (turn-based, one seat vs opponents)
    :param factory: builds the env from keyword arguments (picklable: it may be sent to worker processes)
    """

    env_id: str
    kind: str
    factory: Callable[..., Any]


def is_pettingzoo_id(env_id: Any) -> bool:
    """Whether ``env_id`` names a PettingZoo env (``pettingzoo:...``) rather than a gymnasium one."""
    return isinstance(env_id, str) and env_id.startswith(PETTINGZOO_PREFIX)


def check_pettingzoo_id(env_id: str) -> str:
    """The ``FAMILY/NAME`` of a ``pettingzoo:FAMILY/NAME`` spelling, checked without importing anything.

    :raises UnknownEnvError: for any other spelling
    """
    name = env_id[len(PETTINGZOO_PREFIX) :]
    if not _PETTINGZOO_NAME.fullmatch(name):
        raise UnknownEnvError(
            f"unknown env '{env_id}': a PettingZoo env is spelled pettingzoo:FAMILY/NAME, e.g. {PETTINGZOO_EXAMPLE}"
        )
    return name


def _pettingzoo_names() -> list[str]:
    """The names in PettingZoo's registries, spelled as ``--env`` takes them (``classic/connect_four_v3``)."""
    return sorted(
        {re.sub(r"-v(\d+)$", r"_v\1", known) for known in (*pettingzoo.parallel_registry, *pettingzoo.aec_registry)}
    )


def resolve_pettingzoo_id(env_id: str) -> PettingZooSpec:
    """Find the PettingZoo env ``pettingzoo:FAMILY/NAME`` names: in PettingZoo's registries (parallel first, so an env
    with both APIs trains a shared policy), else as the module ``pettingzoo.FAMILY.NAME`` (its ``parallel_env``, else
    its ``env``). ``NAME`` takes PettingZoo's ``_vN`` or the registry's ``-vN``.

    :raises UnknownEnvError: in one line, for a bad spelling (with close matches), or an env whose extra packages are
        not installed (naming them)
    """
    name = check_pettingzoo_id(env_id)
    for kind in ("parallel", "aec"):
        try:
            spec = pettingzoo.spec(kind, name)
        except PettingZooRegistryError:
            continue
        # Import the entry point now, so a missing package is reported here, in one line.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pettingzoo.make(kind, spec).close()
        except (FailedToImport, ImportError) as error:
            raise UnknownEnvError(_missing_package(env_id, error)) from None
        return PettingZooSpec(env_id, kind, functools.partial(pettingzoo.make, kind, spec.id))
    module_name = "pettingzoo." + re.sub(r"-v(\d+)$", r"_v\1", name).replace("/", ".")
    try:
        with warnings.catch_warnings():
            # PettingZoo >= 1.27 warns that its modules' env() is the old way; it is the way for envs outside its
            # registry.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and not module_name.startswith(error.name):
            raise UnknownEnvError(_missing_package(env_id, error)) from None
        raise UnknownEnvError(f"unknown env '{env_id}': {_pettingzoo_hint(name)}") from None
    except ImportError as error:
        raise UnknownEnvError(_missing_package(env_id, error)) from None
    for attribute, kind in (("parallel_env", "parallel"), ("env", "aec")):
        factory = getattr(module, attribute, None)
        if callable(factory):
            return PettingZooSpec(env_id, kind, factory)
    raise UnknownEnvError(f"unknown env '{env_id}': {module_name} has no parallel_env() or env()")


def is_turn_based(env_id: str) -> bool:
    """Whether ``env_id`` is a turn-based PettingZoo game (an AEC env played through ``PettingZooAECEnv``).

    :raises UnknownEnvError: for a PettingZoo spelling that names no env
    """
    return is_pettingzoo_id(env_id) and resolve_pettingzoo_id(env_id).kind == "aec"


def _missing_package(env_id: str, error: BaseException) -> str:
    cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
    missing = getattr(cause, "name", None) or str(cause)
    family = env_id[len(PETTINGZOO_PREFIX) :].split("/")[0]
    return (
        f"{env_id} needs a package that is not installed ({missing}): pip install 'pettingzoo[{family}]' "
        f"(or the package {missing})"
    )


def _pettingzoo_hint(name: str) -> str:
    close = difflib.get_close_matches(re.sub(r"-v(\d+)$", r"_v\1", name), _pettingzoo_names(), n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(repr(PETTINGZOO_PREFIX + known) for known in close)}?"
    return f"no such PettingZoo env (e.g. {PETTINGZOO_EXAMPLE})"


def _pettingzoo_kwargs_error(env_id: str, error: TypeError) -> ValueError:
    return ValueError(f"bad env kwargs for {env_id}: {str(error).splitlines()[0]}")


def _make_aec(spec: PettingZooSpec, env_kwargs: dict[str, Any] | None, render_mode: str | None) -> gym.Env:
    try:
        return PettingZooAECEnv(spec.factory, render_mode=render_mode, **(env_kwargs or {}))
    except TypeError as error:
        raise _pettingzoo_kwargs_error(spec.env_id, error) from None
    except ValueError as error:  # spaces without masks, an unknown opponent or seat
        raise ValueError(f"{spec.env_id}: {error}") from None


class NoMaskError(ValueError):
    """An env without action masks given to an algorithm that needs them."""


@dataclass(frozen=True)
class EnvDescription:
    """What an algorithm needs to know about an env before training on it.

    :param observation_space: the env's observation space with the mask in it (when it has one)
    :param action_space: the env's action space
    :param mask_source: one of :data:`MASK_SOURCES`, or ``None`` for an env without masks
    """

    observation_space: spaces.Space
    action_space: spaces.Space
    mask_source: str | None


def suggest_env_ids(env_id: str, n: int = 3) -> list[str]:
    """Registered env ids close to ``env_id``, the same name in a namespace first (``Kart-v0``: ``maskrl/Kart-v0``)."""
    registered = list(gym.envs.registry)
    wanted = env_id.lower()
    name = wanted.split("/")[-1]
    # The same name (or the same name without its version) in another namespace: "Kart-v0", "kart", "maskrl/Kart".
    same_name = [known for known in registered if name in (_bare(known), _bare(known).rsplit("-v", 1)[0])]
    if same_name:
        return sorted(same_name, key=lambda known: (known.split("/")[0] != "maskrl", known))[:n]
    by_lower = {known.lower(): known for known in registered}
    return [by_lower[close] for close in difflib.get_close_matches(wanted, list(by_lower), n=n, cutoff=0.75)]


def _bare(env_id: str) -> str:
    return env_id.split("/")[-1].lower()


def _gym_make(env_id: str, env_kwargs: dict[str, Any] | None, render_mode: str | None) -> gym.Env:
    """``gym.make`` with its errors as one-line ``ValueError`` (an unknown id gets the close matches); a PettingZoo
    turn-based game becomes its :class:`~maskrl.envs.pettingzoo_aec.PettingZooAECEnv`."""
    if is_pettingzoo_id(env_id):
        spec = resolve_pettingzoo_id(env_id)
        if spec.kind == "parallel":
            raise ValueError(
                f"{env_id} is a parallel PettingZoo env: it trains through make_masked_vec_env (one slot per agent), "
                "not as one gymnasium env"
            )
        return _make_aec(spec, env_kwargs, render_mode)
    try:
        with warnings.catch_warnings():
            # gymnasium warns about outdated versions before raising its own, clearer, error about them.
            warnings.simplefilter("ignore", DeprecationWarning)
            return gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
    except gym.error.NameNotFound:
        suggestions = suggest_env_ids(env_id)
        if not suggestions:  # a PettingZoo env without its prefix: "connect_four_v3"
            bare = env_id.lower().split("/")[-1]
            suggestions = [PETTINGZOO_PREFIX + known for known in _pettingzoo_names() if known.split("/")[-1] == bare]
        hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else "no such env"
        raise UnknownEnvError(f"unknown env '{env_id}': {hint}") from None
    except (gym.error.Error, ImportError) as error:  # other registry errors (versions, namespaces), module:EnvId
        raise UnknownEnvError(f"unknown env '{env_id}': {str(error).splitlines()[0]}") from None
    except TypeError as error:
        # gymnasium appends the whole kwargs dict to the message; the first clause says it all.
        raise ValueError(f"bad env kwargs for {env_id}: {str(error).split(' was raised from')[0]}") from None


def _mask_source(env: gym.Env) -> str | None:
    """Where ``env`` gives its mask (one of :data:`MASK_SOURCES`), or ``None``. May reset ``env`` once."""
    space = env.observation_space
    if isinstance(space, spaces.Dict) and ACTION_MASK_KEY in space.spaces:
        return "observation"
    try:
        if callable(env.get_wrapper_attr("action_masks")):
            return "method"
    except AttributeError:
        pass
    # Only reset's info tells whether the env reports its mask there (an unseeded reset: the VecEnv seeds it later).
    _, info = env.reset()
    return "info" if isinstance(info, dict) and ACTION_MASK_KEY in info else None


def describe_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvDescription:
    """Make ``env_id`` once to read its spaces and where its mask comes from.

    :raises ValueError: unknown env id (:class:`UnknownEnvError`) or bad env kwargs, in one line
    """
    if is_pettingzoo_id(env_id) and (spec := resolve_pettingzoo_id(env_id)).kind == "parallel":
        parallel = _make_parallel(spec, env_kwargs)
        try:
            observation_space, action_space = check_agent_spaces(parallel)
        except ValueError as error:
            raise ValueError(f"{env_id}: {error}") from None
        finally:
            parallel.close()
        return EnvDescription(observation_space, action_space, "observation")
    env = _gym_make(env_id, env_kwargs, None)
    try:
        source = _mask_source(env)
        if source == "method":
            env = ActionMasksToObservation(env)
        elif source == "info":
            env = InfoActionMaskToObservation(env)
        return EnvDescription(env.observation_space, env.action_space, source)
    finally:
        env.close()


def _make_parallel(spec: PettingZooSpec, env_kwargs: dict[str, Any] | None) -> Any:
    try:
        return spec.factory(**(env_kwargs or {}))
    except TypeError as error:
        raise _pettingzoo_kwargs_error(spec.env_id, error) from None


def make_masked_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    sees_mask: bool = True,
    render_mode: str | None = None,
    needs_mask: bool | None = None,
) -> gym.Env:
    """Make one env in the form an algorithm needs.

    The mask goes into the observation (``ActionMasksToObservation``, ``InfoActionMaskToObservation``) wherever the env
    gives it; algorithms that must not see it get it dropped (``DropMasks``), while ``action_masks()`` stays reachable
    for MaskablePPO. :class:`MaskStats` reports in ``info`` how many actions were valid and whether the one taken was,
    whatever the algorithm sees. An env without masks is returned as it is, for algorithms that need none.

    :param env_id: gymnasium id, e.g. ``maskrl/Kart-v0``
    :param env_kwargs: keyword arguments of the env's constructor
    :param sees_mask: keep the mask in the observation
    :param render_mode: passed to ``gym.make``
    :param needs_mask: refuse an env without masks (:class:`NoMaskError`); ``None``: the same as ``sees_mask``
    :raises ValueError: unknown env id or bad env kwargs, in one line
    """
    env: gym.Env = Monitor(_gym_make(env_id, env_kwargs, render_mode))
    source = _mask_source(env)
    if source is None:
        if sees_mask if needs_mask is None else needs_mask:
            env.close()
            raise NoMaskError(f"{env_id} has no action masks: {HOW_TO_ADD_MASKS}")
        return env
    if source == "method":
        env = ActionMasksToObservation(env)
    elif source == "info":
        env = InfoActionMaskToObservation(env)
    env = MaskStats(env)
    if not sees_mask:
        env = DropMasks(env)
    return env


def make_masked_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    vec_env: str = "dummy",
    env_kwargs: dict[str, Any] | None = None,
    sees_mask: bool = True,
    render_mode: str | None = None,
    needs_mask: bool | None = None,
) -> VecEnv:
    """Make ``n_envs`` copies of :func:`make_masked_env` in a ``DummyVecEnv`` or ``SubprocVecEnv``.

    One env is built in this process first, so a bad id or kwarg fails here with a clear message
    rather than inside a worker process. A parallel PettingZoo env gives a
    :class:`~maskrl.envs.pettingzoo_vec_env.PettingZooVecEnv` of ``n_envs`` copies (one slot per agent of each;
    ``"subproc"`` runs each copy in a worker process).

    :param seed: env ``i`` is seeded with ``seed + i`` at its first reset
    :param vec_env: ``"dummy"`` or ``"subproc"``
    """
    if vec_env not in VEC_ENVS:
        raise ValueError(f"unknown vec env '{vec_env}'; known: {', '.join(VEC_ENVS)}")
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if is_pettingzoo_id(env_id) and (spec := resolve_pettingzoo_id(env_id)).kind == "parallel":
        kwargs = dict(env_kwargs or {})
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        _make_parallel(spec, kwargs).close()  # a bad kwarg fails here, in one line
        venv = PettingZooVecEnv(spec.factory, n_envs, kwargs, processes=vec_env == "subproc", keep_mask=sees_mask)
        if seed is not None:
            venv.seed(seed)
            venv.action_space.seed(seed)
        return venv
    make_masked_env(env_id, env_kwargs, sees_mask, needs_mask=needs_mask).close()
    # functools.partial of a module-level function pickles by reference: workers import maskrl.
    env_fn = functools.partial(make_masked_env, env_id, env_kwargs, sees_mask, render_mode, needs_mask)
    venv = VEC_ENVS[vec_env]([env_fn] * n_envs)
    if seed is not None:
        venv.seed(seed)
        venv.action_space.seed(seed)
    return venv


class MaskStats(gym.Wrapper):
    """Report in each step's ``info`` what the mask allowed, whatever the algorithm above sees.

    - ``info["valid_actions"]``: the number of valid entries of the mask the action was chosen under (for
      ``MultiDiscrete``, summed over the sub-actions), which ``MaskStatsCallback`` logs for every algorithm;
    - ``info["invalid_action"]``, when the env does not say it itself: whether the action was invalid under that
      mask (for a mask that is not flat, e.g. the herd's per-cell one, from the env's ``info["invalid_actions"]``).

    :param env: env whose observation is a ``Dict`` with the mask under ``"action_mask"``
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._mask: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        self._mask = np.asarray(observation[ACTION_MASK_KEY])
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        mask, self._mask = self._mask, np.asarray(observation[ACTION_MASK_KEY])
        if mask is not None:
            info[VALID_ACTIONS_KEY] = int(np.count_nonzero(mask))
            if "invalid_action" not in info:
                invalid = _is_invalid(mask, action, self.env.action_space)
                if invalid is None and "invalid_actions" in info:
                    invalid = bool(info["invalid_actions"])
                if invalid is not None:
                    info["invalid_action"] = invalid
        return observation, reward, terminated, truncated, info


def _is_invalid(mask: np.ndarray, action: Any, action_space: spaces.Space) -> bool | None:
    """Whether ``action`` is invalid under the flat ``mask`` (sb3-contrib's layout); ``None`` if that cannot be told."""
    if mask.ndim != 1:
        return None
    action = np.asarray(action).reshape(-1)
    if isinstance(action_space, spaces.Discrete):
        return not mask[int(action[0]) - int(action_space.start)]
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        offsets = np.concatenate(([0], np.cumsum(action_space.nvec)[:-1]))
        return not mask[offsets + action - action_space.start].all()
    if isinstance(action_space, spaces.MultiBinary):
        return not mask[2 * np.arange(action.size) + action.astype(np.int64)].all()
    return None
