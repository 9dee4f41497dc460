"""An SB3 ``VecEnv`` over PettingZoo parallel envs: one slot per possible agent, for parameter-shared training.

``HerdVecEnv(n_envs=2)`` runs two :class:`~maskrl.envs.panda_herd.PandaHerdParallelEnv` herds and exposes
``num_envs = n_envs * len(possible_agents)`` slots; slot ``e * n_agents + i`` is agent ``possible_agents[i]`` of
herd ``e``. Every slot's observation is that agent's ``{"observation", "action_mask"}`` Dict, so one policy
(maskrl's ``MaskedActorCriticPolicy`` with unchanged SB3 ``PPO``) is shared by all the agents. Any PettingZoo
``ParallelEnv`` whose agents share one observation space and one action space works (``env_fn``); no SuperSuit.

Agents that leave
-----------------
When an agent leaves (terminated or truncated), its slot reports ``done=True`` exactly once, SB3-style:
``info["terminal_observation"]`` is its last observation, ``info["TimeLimit.truncated"]`` is True when it was
truncated and not terminated (so PPO bootstraps from the terminal observation), and ``info["episode"] =
{"r": return, "l": length, "t": seconds since construction}`` feeds SB3's ``ep_info_buffer`` (like ``Monitor``);
the agent's own ``info`` keys (``invalid_action``, ``episode_stats``) are kept. From the next step on the slot is
*dead* until its parallel env resets: its observation is all zeros with an action mask that allows only action 0
(``STAY``), its reward is 0, ``done`` is False, its info is ``{"dead_slot": True}`` and its action is ignored.

Why this is correct for PPO: the done at the agent's exit cuts the GAE chain, so the agent's own advantages never
see the dead steps; in a dead step the masked policy has a single valid action, so its log-probability is 0, the
PPO ratio is exactly 1 and the step contributes no policy gradient and no entropy. The dead steps only train the
value head on the constant dummy observation (harmless) and enter the batch statistics of advantage
normalisation. When every agent of a parallel env has left, that env resets at once (auto-reset) and all its
slots start new episodes in the same step (the slots that were done this step report the new first observation,
as SB3 ``VecEnv``\\ s do).

Seeds and options (``VecEnv.seed()``, ``set_options()``) are taken from the first slot of each parallel env and
used at the next :meth:`HerdVecEnv.reset`. ``get_attr``/``set_attr``/``env_method`` address the parallel env of
each slot (a method is called once per distinct env; its result is repeated for each of that env's slots).
``render()``/``get_images()`` give one image per parallel env (tiled by SB3 for ``"rgb_array"``).
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from maskrl.checks import check_int
from maskrl.masks import ACTION_MASK_KEY

__all__ = ["DEAD_ACTION", "HerdVecEnv"]

#: the only valid action of a dead slot (``STAY`` in the panda herd)
DEAD_ACTION = 0


class HerdVecEnv(VecEnv):
    """SB3 ``VecEnv`` with one slot per (parallel env, possible agent); see the module docstring.

    :param n_envs: number of parallel envs (>= 1).
    :param env_fn: builds one PettingZoo ``ParallelEnv`` from ``env_kwargs``; default
        :func:`maskrl.envs.panda_herd.parallel_env`.
    :param env_kwargs: passed to ``env_fn``.
    """

    def __init__(self, n_envs: int = 1, env_fn: Callable[..., ParallelEnv] | None = None, **env_kwargs: Any) -> None:
        check_int("n_envs", n_envs, 1, None)
        if env_fn is None:
            from maskrl.envs.panda_herd import parallel_env as env_fn
        self.envs: list[ParallelEnv] = [env_fn(**env_kwargs) for _ in range(n_envs)]
        first = self.envs[0]
        self.possible_agents: list[Any] = list(first.possible_agents)
        self.n_agents = len(self.possible_agents)
        obs_space = first.observation_space(self.possible_agents[0])
        act_space = first.action_space(self.possible_agents[0])
        for agent in self.possible_agents:
            if first.observation_space(agent) != obs_space or first.action_space(agent) != act_space:
                raise ValueError(f"all agents must share one observation and one action space; {agent!r} differs")
        if not isinstance(obs_space, spaces.Dict) or ACTION_MASK_KEY not in obs_space.spaces:
            raise ValueError(f"agents' observations must be a Dict with an '{ACTION_MASK_KEY}' key, got {obs_space}")
        if not isinstance(act_space, spaces.Discrete):
            raise ValueError(f"agents' actions must be Discrete, got {act_space}")
        self.n_envs = n_envs
        super().__init__(n_envs * self.n_agents, obs_space, act_space)

        n = self.num_envs
        self._keys = list(obs_space.spaces)
        self._buf = {key: np.zeros((n, *sub.shape), dtype=sub.dtype) for key, sub in obs_space.spaces.items()}
        self._dead_obs = {key: np.zeros(sub.shape, dtype=sub.dtype) for key, sub in obs_space.spaces.items()}
        self._dead_obs[ACTION_MASK_KEY][DEAD_ACTION] = 1
        self._live = np.zeros(n, dtype=bool)
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_len = np.zeros(n, dtype=np.int64)
        self._actions = np.zeros(n, dtype=np.int64)
        self._t_start = time.time()

    # ------------------------------------------------------------------ slots
    def slot(self, env_idx: int, agent: Any) -> int:
        """Index of the slot of ``agent`` in parallel env ``env_idx``."""
        return env_idx * self.n_agents + self.possible_agents.index(agent)

    def _set_obs(self, k: int, obs: dict[str, np.ndarray] | None) -> None:
        src = self._dead_obs if obs is None else obs
        for key in self._keys:
            self._buf[key][k] = src[key]

    def _obs(self) -> VecEnvObs:
        return {key: buf.copy() for key, buf in self._buf.items()}

    def _start(self, e: int, obs: dict[Any, Any], infos: dict[Any, Any]) -> None:
        """Fill env ``e``'s slots from a reset."""
        live = set(self.envs[e].agents)
        for i, agent in enumerate(self.possible_agents):
            k = e * self.n_agents + i
            alive = agent in live
            self._live[k] = alive
            self._ep_return[k] = 0.0
            self._ep_len[k] = 0
            self._set_obs(k, obs[agent] if alive else None)
            self.reset_infos[k] = dict(infos.get(agent, {})) if alive else {"dead_slot": True}

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        """Reset every parallel env (with the seeds/options set by ``seed()``/``set_options()``, then cleared)."""
        for e, env in enumerate(self.envs):
            k = e * self.n_agents
            obs, infos = env.reset(seed=self._seeds[k], options=self._options[k] or None)
            self._start(e, obs, infos)
        self._reset_seeds()
        self._reset_options()
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        """Store one action per slot (dead slots' actions are ignored)."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions (one per slot), got shape {actions.shape}")
        self._actions = actions.reshape(self.num_envs).astype(np.int64)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every parallel env with its live agents' actions; auto-reset the envs whose agents have all left."""
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float32)
        dones = np.zeros(n, dtype=bool)
        out_infos: list[dict[str, Any]] = [{} for _ in range(n)]
        for e, env in enumerate(self.envs):
            base = e * self.n_agents
            acts = {
                agent: int(self._actions[base + i])
                for i, agent in enumerate(self.possible_agents)
                if self._live[base + i]
            }
            obs, rew, term, trunc, infos = env.step(acts)
            now_live = set(env.agents)
            for i, agent in enumerate(self.possible_agents):
                k = base + i
                if not self._live[k]:
                    if agent in now_live:  # an agent that joins mid-episode (not in the herd)
                        self._live[k] = True
                        self._set_obs(k, obs[agent])
                        out_infos[k] = dict(infos.get(agent, {}))
                    else:
                        self._set_obs(k, None)
                        out_infos[k] = {"dead_slot": True}
                    continue
                r = float(rew.get(agent, 0.0))
                rewards[k] = r
                self._ep_return[k] += r
                self._ep_len[k] += 1
                info = dict(infos.get(agent, {}))
                terminated, truncated = bool(term.get(agent, False)), bool(trunc.get(agent, False))
                if terminated or truncated or agent not in now_live:
                    dones[k] = True
                    self._live[k] = False
                    last = obs.get(agent, self._dead_obs)
                    info["terminal_observation"] = {key: np.array(last[key]) for key in self._keys}
                    info["TimeLimit.truncated"] = truncated and not terminated
                    info["episode"] = {
                        "r": float(self._ep_return[k]),
                        "l": int(self._ep_len[k]),
                        "t": round(time.time() - self._t_start, 6),
                    }
                    self._set_obs(k, None)
                else:
                    self._set_obs(k, obs[agent])
                out_infos[k] = info
            if not env.agents:
                new_obs, new_infos = env.reset()
                self._start(e, new_obs, new_infos)
        return self._obs(), rewards, dones, out_infos

    def close(self) -> None:
        """Close every parallel env."""
        for env in self.envs:
            env.close()

    def _env_indices(self, indices: VecEnvIndices) -> list[int]:
        return [k // self.n_agents for k in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``getattr(parallel env of slot, attr_name)`` for each slot in ``indices``."""
        return [getattr(self.envs[e], attr_name) for e in self._env_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on the parallel env of each slot in ``indices``."""
        for e in dict.fromkeys(self._env_indices(indices)):
            setattr(self.envs[e], attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call ``method_name`` once on each distinct parallel env of ``indices``; one result per slot."""
        env_idx = self._env_indices(indices)
        results = {e: getattr(self.envs[e], method_name)(*method_args, **method_kwargs) for e in dict.fromkeys(env_idx)}
        return [results[e] for e in env_idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the slots are PettingZoo agents, not (wrapped) gymnasium envs."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One ``render()`` image per parallel env (not per slot)."""
        if self.render_mode != "rgb_array":
            return [None for _ in self.envs]
        return [env.render() for env in self.envs]
