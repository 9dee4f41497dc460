"""Any PettingZoo ``ParallelEnv`` with action masks as an SB3 ``VecEnv``: one slot per agent, one shared policy.

.. list-table::
   :header-rows: 0

   * - Import
     - ``from maskrl.envs.pettingzoo_vec_env import PettingZooVecEnv``; ``train.py --env pettingzoo:NAME`` for a
       parallel env of PettingZoo's registry or of a ``pettingzoo.<family>.<name>`` module
   * - Wraps
     - a PettingZoo ``ParallelEnv`` whose agents share one ``Dict`` observation space holding ``"action_mask"``
       and one ``Discrete`` action space (the panda herd, PettingZoo's own masked envs, yours)
   * - Slots
     - ``num_envs = n_envs * len(possible_agents)``; slot ``e * n_agents + i`` is ``possible_agents[i]`` of copy
       ``e``
   * - Processes
     - ``processes=False`` (default): every copy in this process; ``processes=True``: each copy in its own worker
       process, stepped in parallel (as SB3's ``SubprocVecEnv``)

Description
-----------
``PettingZooVecEnv(env_fn, n_envs=2)`` makes two copies of the parallel env and exposes one SB3 ``VecEnv`` slot
per possible agent of each. Every slot's observation is that agent's ``Dict`` (its ``"action_mask"`` included), so
one policy — maskrl's ``MaskedActorCriticPolicy`` under unchanged SB3 ``PPO`` — is shared by all the agents
(parameter sharing), without SuperSuit. The mask is stored as int8 whatever dtype the env gives it in.

Agents that leave
-----------------
When an agent leaves (terminated or truncated, or gone from ``env.agents``), its slot reports ``done=True``
exactly once, SB3-style: ``info["terminal_observation"]`` is its last observation, ``info["TimeLimit.truncated"]``
is True when it was truncated and not terminated (so PPO bootstraps from the terminal observation), and
``info["episode"] = {"r": return, "l": length, "t": seconds}`` feeds SB3's ``ep_info_buffer`` as ``Monitor`` does
(so ``env_is_wrapped(Monitor)`` answers True, and ``evaluate_policy`` counts each agent's episode once, with its
own length). The agent's own ``info`` keys (``invalid_action``, ``episode_stats``, ...) are kept.

From the next step on the slot is *dead* until its copy resets: its observation is all zeros with an action mask
that allows only ``dead_action`` (0 by default: PettingZoo's no-op where an env has one, the herd's ``STAY``;
``dead_action=None`` allows every action instead), its reward is 0, ``done`` is False, its info is
``{"dead_slot": True}`` and its action is ignored. The distribution never sees an empty mask.

Why this is correct for PPO: the done at the agent's exit cuts the GAE chain, so the agent's own advantages never
see the dead steps; in a dead step the masked policy has a single valid action, so its log-probability is 0, the
PPO ratio is exactly 1 and the step contributes no policy gradient and no entropy. The dead steps only train the
value head on the constant dummy observation (harmless) and enter the batch statistics of advantage
normalisation. When every agent of a copy has left, that copy resets at once (auto-reset) and all its slots start
new episodes in the same step (the slots that were done this step report the new first observation, as SB3
``VecEnv``\\ s do).

Agents that join
----------------
An agent of ``possible_agents`` that is not in ``env.agents`` after a reset starts dead; its slot comes alive at
the step in which the env first returns an observation for it (with that step's info; its reward counts from its
next step).

Masks and statistics
--------------------
Each live slot's step ``info`` holds ``valid_actions`` (how many actions the mask allowed when the action was
chosen, which maskrl's ``MaskStatsCallback`` logs) and ``invalid_action`` (when the env does not report it
itself). With ``keep_mask=False`` the mask keys are dropped from the observations (for algorithms that see no
mask; a lone ``"observation"`` key becomes the observation itself, as ``DropMasks`` does) and
:meth:`PettingZooVecEnv.action_masks` (also ``env_method("action_masks")``, which sb3-contrib's ``MaskablePPO``
calls) gives one boolean mask per slot.

Seeds, attributes, rendering
----------------------------
Seeds and options (``VecEnv.seed()``, ``set_options()``) are taken from the first slot of each copy and used at
the next :meth:`PettingZooVecEnv.reset`; auto-resets are unseeded (the copy's generator goes on).
``get_attr``/``set_attr``/``env_method`` address the parallel env of each slot (a method is called once per
distinct copy; its result is repeated for each of that copy's slots). ``render()``/``get_images()`` give one
image per copy (tiled by SB3 for ``"rgb_array"``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from maskrl.checks import check_int
from maskrl.masks import ACTION_MASK_KEY, MASK_KEYS

__all__ = ["DEAD_ACTION", "PettingZooVecEnv", "check_agent_spaces"]

#: the only valid action of a dead slot by default (PettingZoo's no-op where an env has one; the herd's ``STAY``)
DEAD_ACTION = 0


def check_agent_spaces(env: ParallelEnv | AECEnv) -> tuple[spaces.Dict, spaces.Discrete]:
    """The observation and action spaces every agent of ``env`` shares, with the mask as an int8 ``Box``.

    :param env: a PettingZoo ``ParallelEnv``, or an ``AECEnv`` (its players)
    :raises ValueError: in one line, for agents with different spaces, observations without an ``"action_mask"``
        key, a mask that does not fit the actions, or actions that are not ``Discrete``
    """
    agents = list(env.possible_agents)
    if not agents:
        raise ValueError("the parallel env has no possible_agents")
    obs_space, act_space = env.observation_space(agents[0]), env.action_space(agents[0])
    for agent in agents[1:]:
        if env.observation_space(agent) != obs_space or env.action_space(agent) != act_space:
            raise ValueError(f"all agents must share one observation and one action space; {agent!r} differs")
    if not isinstance(obs_space, spaces.Dict) or ACTION_MASK_KEY not in obs_space.spaces:
        raise ValueError(
            f"the agents' observations must be a Dict with an '{ACTION_MASK_KEY}' key (PettingZoo's convention), "
            f"got {obs_space}"
        )
    if not isinstance(act_space, spaces.Discrete):
        raise ValueError(f"the agents' actions must be Discrete, got {act_space}")
    mask_shape = obs_space[ACTION_MASK_KEY].shape
    if mask_shape != (int(act_space.n),):
        raise ValueError(f"the '{ACTION_MASK_KEY}' must have shape ({int(act_space.n)},), got {mask_shape}")
    keys = {key: sub for key, sub in obs_space.spaces.items() if key != ACTION_MASK_KEY}
    keys[ACTION_MASK_KEY] = spaces.Box(0, 1, mask_shape, np.int8)
    return spaces.Dict(keys), act_space


class _Copy:
    """One parallel env and the bookkeeping of its slots; lives in the VecEnv's process or in a worker.

    Returns arrays for its ``n_agents`` slots, so that a worker sends one message per step.
    """

    def __init__(self, env_fn: Callable[[], ParallelEnv], dead_action: int | None) -> None:
        self.env = env_fn()
        self.agents: list[Any] = list(self.env.possible_agents)
        self.space, _ = check_agent_spaces(self.env)
        n = len(self.agents)
        self.keys = list(self.space.spaces)
        self.buf = {key: np.zeros((n, *sub.shape), dtype=sub.dtype) for key, sub in self.space.spaces.items()}
        self.dead_obs = {key: np.zeros(sub.shape, dtype=sub.dtype) for key, sub in self.space.spaces.items()}
        if dead_action is None:
            self.dead_obs[ACTION_MASK_KEY][:] = 1
        else:
            self.dead_obs[ACTION_MASK_KEY][dead_action] = 1
        self.live = np.zeros(n, dtype=bool)
        self.ep_return = np.zeros(n, dtype=np.float64)
        self.ep_len = np.zeros(n, dtype=np.int64)
        self.t_start = time.time()

    def _set_obs(self, i: int, obs: dict[str, Any] | None) -> None:
        src = self.dead_obs if obs is None else obs
        for key in self.keys:
            self.buf[key][i] = src[key]

    def _obs(self) -> dict[str, np.ndarray]:
        return {key: buf.copy() for key, buf in self.buf.items()}

    def _start(self, obs: dict[Any, Any], infos: dict[Any, Any]) -> list[dict[str, Any]]:
        """Fill the slots from a reset; return their reset infos."""
        live = set(self.env.agents)
        out = []
        for i, agent in enumerate(self.agents):
            alive = agent in live and agent in obs
            self.live[i] = alive
            self.ep_return[i] = 0.0
            self.ep_len[i] = 0
            self._set_obs(i, obs[agent] if alive else None)
            out.append(dict(infos.get(agent, {})) if alive else {"dead_slot": True})
        return out

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[dict[str, np.ndarray], list[dict]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        reset_infos = self._start(obs, infos)
        return self._obs(), reset_infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Step the live agents with their slots' actions; auto-reset once every agent has left.

        :return: observations, rewards, dones and infos of the slots, and the reset infos after an auto-reset
        """
        n = len(self.agents)
        rewards = np.zeros(n, dtype=np.float32)
        dones = np.zeros(n, dtype=bool)
        out: list[dict[str, Any]] = [{} for _ in range(n)]
        masks = self.buf[ACTION_MASK_KEY]
        acts = {agent: int(actions[i]) for i, agent in enumerate(self.agents) if self.live[i]}
        valid = {i: int(np.count_nonzero(masks[i])) for i in range(n) if self.live[i]}
        n_actions = masks.shape[1]
        invalid = {i: not (0 <= actions[i] < n_actions and masks[i][actions[i]]) for i in range(n) if self.live[i]}
        obs, rew, term, trunc, infos = self.env.step(acts)
        now_live = set(self.env.agents)
        for i, agent in enumerate(self.agents):
            if not self.live[i]:
                if agent in now_live and agent in obs:  # an agent that joins
                    self.live[i] = True
                    self._set_obs(i, obs[agent])
                    out[i] = dict(infos.get(agent, {}))
                else:
                    self._set_obs(i, None)
                    out[i] = {"dead_slot": True}
                continue
            r = float(rew.get(agent, 0.0))
            rewards[i] = r
            self.ep_return[i] += r
            self.ep_len[i] += 1
            info = dict(infos.get(agent, {}))
            info["valid_actions"] = valid[i]
            info.setdefault("invalid_action", invalid[i])
            terminated, truncated = bool(term.get(agent, False)), bool(trunc.get(agent, False))
            if terminated or truncated or agent not in now_live:
                dones[i] = True
                self.live[i] = False
                last = obs.get(agent, self.dead_obs)
                info["terminal_observation"] = {
                    key: np.array(last[key], dtype=self.buf[key].dtype) for key in self.keys
                }
                info["TimeLimit.truncated"] = truncated and not terminated
                info["episode"] = {
                    "r": float(self.ep_return[i]),
                    "l": int(self.ep_len[i]),
                    "t": round(time.time() - self.t_start, 6),
                }
                self._set_obs(i, None)
            else:
                self._set_obs(i, obs[agent])
            out[i] = info
        reset_infos = None
        if not self.env.agents:
            reset_infos = self._start(*self.env.reset())
        return self._obs(), rewards, dones, out, reset_infos

    def action_masks(self) -> np.ndarray:
        """bool ``(n_agents, n_actions)``: the masks of the slots' current observations."""
        return self.buf[ACTION_MASK_KEY].astype(bool)

    def get_attr(self, name: str) -> Any:
        return getattr(self.env, name)

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return getattr(self.env, name)(*args, **kwargs)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def _worker(remote: Connection, parent_remote: Connection, make_copy: CloudpickleWrapper) -> None:
    """A worker process: builds one copy, then answers ``(method, args)`` messages until ``close``."""
    parent_remote.close()
    copy = None
    try:
        copy = make_copy.var()
        remote.send(("ok", None))
        while True:
            method, args = remote.recv()
            try:
                result = getattr(copy, method)(*args)
            except Exception as error:  # sent back, raised in the parent (a worker must not die silently)
                remote.send(("error", (type(error).__name__, f"{error}\n{traceback.format_exc()}")))
                continue
            remote.send(("ok", result))
            if method == "close":
                break
    except Exception as error:  # building the copy failed
        remote.send(("error", (type(error).__name__, f"{error}\n{traceback.format_exc()}")))
    except (EOFError, KeyboardInterrupt):  # the parent went away
        pass
    finally:
        remote.close()


class _Remote:
    """The parent's end of a worker: sends a method call, receives its result."""

    def __init__(self, make_copy: Callable[[], _Copy], context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, self.conn, CloudpickleWrapper(make_copy)))
        self.process.daemon = True  # workers end with the parent
        self.process.start()
        child.close()

    def send(self, method: str, *args: Any) -> None:
        self.conn.send((method, args))

    def receive(self) -> Any:
        try:
            status, result = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"a PettingZooVecEnv worker died (exit code {self.process.exitcode})") from None
        if status == "error":
            kind, message = result
            # get_attr's AttributeError stays one: SB3's VecEnv asks for render_mode and copes with its absence.
            raise (AttributeError if kind == "AttributeError" else RuntimeError)(
                f"a PettingZooVecEnv worker raised {kind}: {message}"
            )
        return result

    def call(self, method: str, *args: Any) -> Any:
        self.send(method, *args)
        return self.receive()


class PettingZooVecEnv(VecEnv):
    """SB3 ``VecEnv`` with one slot per (copy of a parallel env, possible agent); see the module docstring.

    :param env_fn: builds one PettingZoo ``ParallelEnv`` from ``env_kwargs`` (with ``processes=True`` it must
        pickle with cloudpickle: a module-level function, a ``functools.partial``, a lambda)
    :param n_envs: number of copies of the parallel env (>= 1)
    :param env_kwargs: passed to ``env_fn``
    :param processes: run each copy in its own worker process (stepped in parallel) instead of in this process
    :param keep_mask: keep the mask keys in the observations (``False``: for algorithms that see no mask)
    :param dead_action: the one valid action of a dead slot; ``None``: every action
    :param start_method: multiprocessing start method of the workers (default: ``forkserver`` where available, else
        ``spawn``, as SB3's ``SubprocVecEnv``)
    :raises ValueError: in one line, for an env whose agents' spaces do not fit (see :func:`check_agent_spaces`)
        or a ``dead_action`` outside the action space
    """

    def __init__(
        self,
        env_fn: Callable[..., ParallelEnv],
        n_envs: int = 1,
        env_kwargs: dict[str, Any] | None = None,
        processes: bool = False,
        keep_mask: bool = True,
        dead_action: int | None = DEAD_ACTION,
        start_method: str | None = None,
    ) -> None:
        check_int("n_envs", n_envs, 1, None)
        self.env_fn = env_fn
        self.env_kwargs = dict(env_kwargs or {})
        # One env here first: its spaces, and a bad env or kwarg fails in this process, not in a worker.
        probe = env_fn(**self.env_kwargs)
        try:
            space, act_space = check_agent_spaces(probe)
            self.possible_agents: list[Any] = list(probe.possible_agents)
        finally:
            if processes:
                probe.close()
        if dead_action is not None and not 0 <= dead_action < int(act_space.n):
            raise ValueError(f"dead_action must be None or an action in [0, {int(act_space.n)}), got {dead_action}")
        self.n_agents = len(self.possible_agents)
        self.n_envs = n_envs
        self.keep_mask = keep_mask
        self.processes = processes
        make_copy = _CopyFactory(env_fn, self.env_kwargs, dead_action)
        if processes:
            context = mp.get_context(start_method or _default_start_method())
            self._copies: list[Any] = []
            self._remotes = [_Remote(make_copy, context) for _ in range(n_envs)]
            for remote in self._remotes:  # each says when its copy is built (or why it could not be)
                remote.receive()
            probe = None
        else:
            self._remotes = []
            self._copies = [_Copy(lambda env=probe: env, dead_action)]
            self._copies += [make_copy() for _ in range(n_envs - 1)]
        self._feature_keys = [key for key in space.spaces if key not in MASK_KEYS]
        super().__init__(n_envs * self.n_agents, space if keep_mask else _without_masks(space), act_space)
        self._full_space = space
        self._masks = np.zeros((self.num_envs, int(act_space.n)), dtype=bool)
        self._actions: np.ndarray | None = None
        self.closed = False

    # ------------------------------------------------------------------ slots
    def slot(self, env_idx: int, agent: Any) -> int:
        """Index of the slot of ``agent`` in copy ``env_idx``."""
        return env_idx * self.n_agents + self.possible_agents.index(agent)

    @property
    def envs(self) -> list[ParallelEnv]:
        """The parallel envs of an in-process ``PettingZooVecEnv`` (with ``processes=True`` they live in workers)."""
        if self.processes:
            raise AttributeError("the parallel envs live in worker processes: use get_attr/set_attr/env_method")
        return [copy.env for copy in self._copies]

    def _call_all(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method`` on every copy (the workers all at once), the copy ``e`` with ``args[e]``."""
        if not self.processes:
            return [getattr(copy, method)(*a) for copy, a in zip(self._copies, args, strict=True)]
        for remote, a in zip(self._remotes, args, strict=True):
            remote.send(method, *a)
        return [remote.receive() for remote in self._remotes]

    def _call(self, e: int, method: str, *args: Any) -> Any:
        if not self.processes:
            return getattr(self._copies[e], method)(*args)
        return self._remotes[e].call(method, *args)

    def _gather(self, per_copy: list[dict[str, np.ndarray]]) -> VecEnvObs:
        """Concatenate the copies' observations, keeping the keys the algorithm sees; note the masks."""
        full = {key: np.concatenate([obs[key] for obs in per_copy]) for key in self._full_space.spaces}
        self._masks = full[ACTION_MASK_KEY].astype(bool)
        if self.keep_mask:
            return full
        if self._feature_keys == ["observation"]:
            return full["observation"]
        return {key: full[key] for key in self._feature_keys}

    def _strip(self, observation: dict[str, np.ndarray]) -> Any:
        """A terminal observation as the algorithm sees it."""
        if self.keep_mask:
            return observation
        if self._feature_keys == ["observation"]:
            return observation["observation"]
        return {key: observation[key] for key in self._feature_keys}

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        """Reset every copy (with the seeds/options set by ``seed()``/``set_options()``, then cleared)."""
        args = [(self._seeds[e * self.n_agents], self._options[e * self.n_agents] or None) for e in range(self.n_envs)]
        results = self._call_all("reset", args)
        for e, (_, infos) in enumerate(results):
            self.reset_infos[e * self.n_agents : (e + 1) * self.n_agents] = infos
        self._reset_seeds()
        self._reset_options()
        return self._gather([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        """Send one action per slot to the copies (dead slots' actions are ignored)."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions (one per slot), got shape {actions.shape}")
        self._actions = actions.reshape(self.num_envs).astype(np.int64)
        if self.processes:
            for e, remote in enumerate(self._remotes):
                remote.send("step", self._actions[e * self.n_agents : (e + 1) * self.n_agents])

    def step_wait(self) -> VecEnvStepReturn:
        """Step every copy with its live agents' actions; auto-reset the copies whose agents have all left."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        n = self.n_agents
        if self.processes:
            results = [remote.receive() for remote in self._remotes]
        else:
            results = [copy.step(self._actions[e * n : (e + 1) * n]) for e, copy in enumerate(self._copies)]
        self._actions = None
        infos: list[dict[str, Any]] = []
        for e, (_, _, _, copy_infos, reset_infos) in enumerate(results):
            if not self.keep_mask:
                for info in copy_infos:
                    if "terminal_observation" in info:
                        info["terminal_observation"] = self._strip(info["terminal_observation"])
            infos += copy_infos
            if reset_infos is not None:
                self.reset_infos[e * n : (e + 1) * n] = reset_infos
        obs = self._gather([r[0] for r in results])
        rewards = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        return obs, rewards, dones, infos

    def action_masks(self) -> np.ndarray:
        """bool ``(num_envs, n_actions)``: each slot's current mask (sb3-contrib's ``MaskablePPO`` reads it)."""
        return self._masks.copy()

    def close(self) -> None:
        """Close every copy and end the workers."""
        if self.closed:
            return
        if self.processes:
            for remote in self._remotes:
                with contextlib.suppress(EOFError, BrokenPipeError, RuntimeError):  # a worker already gone
                    remote.call("close")
            for remote in self._remotes:
                remote.process.join(timeout=5)
        else:
            for copy in self._copies:
                copy.close()
        self.closed = True

    def _env_indices(self, indices: VecEnvIndices) -> list[int]:
        return [k // self.n_agents for k in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``getattr(parallel env of slot, attr_name)`` for each slot in ``indices``."""
        env_idx = self._env_indices(indices)
        values = {e: self._call(e, "get_attr", attr_name) for e in dict.fromkeys(env_idx)}
        return [values[e] for e in env_idx]

    def has_attr(self, attr_name: str) -> bool:
        """Whether the parallel envs have ``attr_name``; ``action_masks`` always (sb3-contrib asks for it)."""
        return attr_name == "action_masks" or super().has_attr(attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on the parallel env of each slot in ``indices``."""
        for e in dict.fromkeys(self._env_indices(indices)):
            self._call(e, "set_attr", attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call ``method_name`` once on each distinct parallel env of ``indices``; one result per slot.

        ``"action_masks"`` is answered per slot (:meth:`action_masks`), as sb3-contrib's ``MaskablePPO`` asks it.
        """
        if method_name == "action_masks":
            return list(self.action_masks()[self._get_indices(indices)])
        env_idx = self._env_indices(indices)
        results = {
            e: self._call(e, "env_method", method_name, method_args, method_kwargs) for e in dict.fromkeys(env_idx)
        }
        return [results[e] for e in env_idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for SB3's ``Monitor`` only: the slots report ``info["episode"]`` as it does; nothing else wraps them."""
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One ``render()`` image per copy (not per slot)."""
        if self.render_mode != "rgb_array":
            return [None] * self.n_envs
        return [self._call(e, "render") for e in range(self.n_envs)]


class _CopyFactory:
    """Builds a :class:`_Copy` (a class rather than a closure: it is sent to the workers)."""

    def __init__(self, env_fn: Callable[..., ParallelEnv], env_kwargs: dict[str, Any], dead_action: int | None):
        self.env_fn = env_fn
        self.env_kwargs = env_kwargs
        self.dead_action = dead_action

    def __call__(self) -> _Copy:
        return _Copy(lambda: self.env_fn(**self.env_kwargs), self.dead_action)


def _without_masks(space: spaces.Dict) -> spaces.Space:
    keep = [key for key in space.spaces if key not in MASK_KEYS]
    if keep == ["observation"]:
        return space["observation"]
    return spaces.Dict({key: space[key] for key in keep})


def _default_start_method() -> str:
    # As SB3's SubprocVecEnv: fork is unsafe with threads (torch), forkserver is where it exists.
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
