"""Masked multi-agent training on PettingZoo envs: the parallel adapter, the turn-based view, self-play, the CLI.

The adapters must never hand an env an invalid action nor an action for an agent that is not acting: the tiny
parallel env below raises on either, and the turn-based games are played with the learner's mask checked at every
move (``info["invalid_action"]``, which the view computes from the mask the move was chosen under).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from pettingzoo import ParallelEnv
from pettingzoo.classic import connect_four_v3, tictactoe_v3
from pettingzoo.test import api_test, parallel_api_test
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from maskrl.agents.env_setup import (
    describe_env,
    is_turn_based,
    make_masked_env,
    make_masked_vec_env,
    resolve_pettingzoo_id,
)
from maskrl.agents.safe_load import SafeLoadError, check_env_id
from maskrl.agents.self_play import (
    LookaheadOpponent,
    OpponentPool,
    PolicyOpponent,
    RandomOpponent,
    SelfPlayCallback,
    make_opponent,
    training_callbacks,
)
from maskrl.envs import panda_herd_v0
from maskrl.envs.pettingzoo_aec import PettingZooAECEnv
from maskrl.envs.pettingzoo_vec_env import PettingZooVecEnv
from maskrl.evaluate import main as evaluate_main
from maskrl.policies import MaskedActorCriticPolicy
from maskrl.train import main as train_main

CONNECT_FOUR = "pettingzoo:classic/connect_four_v3"
TICTACTOE = "pettingzoo:classic/tictactoe_v3"
HERD = "pettingzoo:maskrl/panda_herd_v0"
GAMES = [connect_four_v3.env, tictactoe_v3.env]


# ---------------------------------------------------------------------- a tiny parallel env whose agents die and join
class Relay(ParallelEnv):
    """Four agents; ``late`` joins at step 2; an agent dies when it plays action 3; truncation after ``max_steps``.

    Each agent's mask is random (never empty). The env raises on an invalid action and on an action for an agent
    that is not acting, so any slip of an adapter fails the test.
    """

    metadata = {"name": "relay_v0", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(self, max_steps: int = 12, render_mode: str | None = None) -> None:
        self.possible_agents = ["a", "b", "c", "late"]
        self.max_steps = max_steps
        self.render_mode = render_mode
        self._obs_space = spaces.Dict(
            {
                "observation": spaces.Box(0.0, 1.0, (3,), np.float32),
                "action_mask": spaces.Box(0, 1, (4,), np.int8),
            }
        )
        self.rng = np.random.default_rng()
        self.agents: list[str] = []
        self.deaths = self.joins = self.actions_seen = 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(4)

    def _observe(self, agent: str) -> dict[str, np.ndarray]:
        mask = (self.rng.random(4) < 0.5).astype(np.int8)
        mask[self.rng.integers(4)] = 1
        self.masks[agent] = mask
        obs = np.array([self.t / self.max_steps, self.possible_agents.index(agent) / 3, mask[3]], np.float32)
        return {"observation": obs, "action_mask": mask}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        self.masks: dict[str, np.ndarray] = {}
        self.agents = ["a", "b", "c"]
        return {agent: self._observe(agent) for agent in self.agents}, {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, Any]):
        if set(actions) != set(self.agents):
            raise AssertionError(f"actions for {sorted(actions)}, acting agents {sorted(self.agents)}")
        for agent, action in actions.items():
            if not self.masks[agent][action]:
                raise AssertionError(f"invalid action {action} for {agent} (mask {self.masks[agent]})")
        self.actions_seen += len(actions)
        self.t += 1
        truncate = self.t >= self.max_steps
        obs, rew, term, trunc, infos = {}, {}, {}, {}, {}
        for agent, action in actions.items():
            obs[agent] = self._observe(agent)
            rew[agent] = float(action == 1)
            term[agent] = action == 3
            trunc[agent] = truncate and action != 3
            infos[agent] = {}
        self.deaths += sum(term.values())
        self.agents = [agent for agent in self.agents if not (term[agent] or trunc[agent])]
        if self.t == 2 and not truncate:
            self.agents.append("late")
            self.joins += 1
            obs["late"], infos["late"] = self._observe("late"), {}
        return obs, rew, term, trunc, infos

    def render(self) -> np.ndarray:
        return np.full((4, 4, 3), 10 * self.t, np.uint8)


def _random_masked_actions(obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(mask)) for mask in obs["action_mask"]])


def _check_slots(venv: PettingZooVecEnv, act: Any, steps: int) -> dict[str, int]:
    """Step ``venv`` with ``act(obs)``; check the slot contract; count dones, dead steps and joins."""
    obs = venv.reset()
    counts = {"dones": 0, "dead": 0, "joins": 0}
    dead = np.zeros(venv.num_envs, dtype=bool)
    for _ in range(steps):
        assert (obs["action_mask"].sum(axis=1) >= 1).all()  # never an empty mask
        actions = act(obs)
        assert obs["action_mask"][np.arange(venv.num_envs), actions].all()
        obs, rewards, dones, infos = venv.step(actions)
        n = venv.n_agents
        for k, info in enumerate(infos):
            copy_reset = dones[k // n * n : (k // n + 1) * n].any()  # (it may have auto-reset)
            if info.get("dead_slot"):
                counts["dead"] += 1
                assert rewards[k] == 0.0 and not dones[k]
                if not copy_reset:  # (after an auto-reset the observation is the new episode's first)
                    assert obs["action_mask"][k].tolist() == [1] + [0] * (obs["action_mask"].shape[1] - 1)
            elif dead[k]:  # an agent that joins: its action was not asked for
                counts["joins"] += 1
            else:
                assert info["invalid_action"] is False and info["valid_actions"] >= 1
            if dones[k]:
                counts["dones"] += 1
                assert set(info["episode"]) == {"r", "l", "t"}
                assert venv.observation_space.contains(info["terminal_observation"])
        dead = np.array([bool(info.get("dead_slot")) for info in infos])
    return counts


def test_parallel_adapter_handles_deaths_and_joins_with_a_random_masked_policy():
    venv = PettingZooVecEnv(Relay, n_envs=2)
    venv.seed(0)
    rng = np.random.default_rng(0)
    counts = _check_slots(venv, lambda obs: _random_masked_actions(obs, rng), 150)
    assert counts["dones"] > 20 and counts["dead"] > 20 and counts["joins"] > 0
    relays = venv.envs
    assert all(r.deaths > 0 and r.joins > 0 for r in relays)
    assert venv.get_attr("max_steps") == [12] * 8
    venv.close()


def test_parallel_adapter_in_worker_processes_matches_in_process():
    def rollout(processes: bool) -> list[np.ndarray]:
        venv = PettingZooVecEnv(Relay, n_envs=2, processes=processes)
        venv.seed(3)
        obs = venv.reset()
        rng = np.random.default_rng(1)
        seen = []
        for _ in range(40):
            obs, rewards, dones, _ = venv.step(_random_masked_actions(obs, rng))
            seen += [obs["observation"], obs["action_mask"], rewards, dones]
        assert venv.get_attr("max_steps", indices=[0, 5]) == [12, 12]
        venv.set_attr("max_steps", 12)
        assert venv.env_method("render", indices=[4])[0].shape == (4, 4, 3)
        venv.close()
        return seen

    for a, b in zip(rollout(False), rollout(True), strict=True):
        np.testing.assert_array_equal(a, b)


def test_parallel_adapter_never_sends_invalid_actions_from_trained_policies():
    # maskrl's PPO reads the mask from the observation; MaskablePPO reads action_masks() (the mask is dropped).
    for algo, keep_mask in ((PPO, True), (MaskablePPO, False)):
        venv = PettingZooVecEnv(Relay, n_envs=2, keep_mask=keep_mask)
        policy = MaskedActorCriticPolicy if keep_mask else "MlpPolicy"
        model = algo(policy, venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
        model.learn(512)  # Relay raises on any invalid action or action for an absent agent
        assert len(model.ep_info_buffer) > 0
        if keep_mask:
            counts = _check_slots(venv, lambda obs, m=model: m.predict(obs, deterministic=True)[0], 60)
            assert counts["dones"] > 0
        venv.close()


def test_herd_through_the_adapter_with_a_trained_policy_and_pettingzoo_api_tests():
    api_test(panda_herd_v0.env(max_steps=30), num_cycles=60)
    parallel_api_test(panda_herd_v0.parallel_env(max_steps=30), num_cycles=60)
    venv = PettingZooVecEnv(panda_herd_v0.parallel_env, 1, dict(max_steps=20, dragon_chase_prob=1.0))
    model = PPO(MaskedActorCriticPolicy, venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    counts = _check_slots(venv, lambda obs: model.predict(obs, deterministic=True)[0], 60)
    assert counts["dones"] >= 4 and counts["dead"] > 0


def test_parallel_adapter_refuses_envs_it_cannot_serve():
    class NoMask(Relay):
        def observation_space(self, agent):
            return spaces.Box(0.0, 1.0, (3,), np.float32)

    with pytest.raises(ValueError, match="must be a Dict with an 'action_mask' key"):
        PettingZooVecEnv(NoMask)
    with pytest.raises(ValueError, match="dead_action must be None or an action in"):
        PettingZooVecEnv(Relay, dead_action=7)
    venv = PettingZooVecEnv(Relay, dead_action=None)  # dead slots allow every action instead
    obs = venv.reset()
    assert obs["action_mask"][3].tolist() == [1, 1, 1, 1]  # "late" has not joined yet


# ---------------------------------------------------------------------- turn-based games
@pytest.mark.parametrize("game", GAMES, ids=["connect_four", "tictactoe"])
def test_aec_view_passes_gymnasium_checks_and_alternates_seats(game):
    check_env(PettingZooAECEnv(game), skip_render_check=True)
    env = PettingZooAECEnv(game, opponent="random")
    rng = np.random.default_rng(0)
    seats, outcomes = [], []
    obs, info = env.reset(seed=0)
    for _ in range(30):
        seats.append(info["seat"])
        board = obs["observation"]
        # The learner moves first (seat 0) on an empty board, or second after the opponent's first piece.
        assert (board[..., 0].sum(), board[..., 1].sum()) == ((0, 0) if info["seat"] == 0 else (0, 1))
        done = False
        while not done:
            mine, theirs = obs["observation"][..., 0].sum(), obs["observation"][..., 1].sum()
            assert theirs - mine == info["seat"]  # the opponent has replied: it is the learner's turn
            obs, reward, terminated, truncated, step_info = env.step(rng.choice(np.flatnonzero(obs["action_mask"])))
            assert step_info["invalid_action"] is False
            done = terminated or truncated
        outcomes.append(step_info["outcome"])
        assert reward == {"win": 1.0, "draw": 0.0, "loss": -1.0}[step_info["outcome"]]
        assert step_info["episode_stats"][step_info["outcome"]] == 1.0 and step_info["opponent"] == "random"
        assert obs["action_mask"].any()  # the observation that ends a game never has an empty mask
        obs, info = env.reset()
    assert seats == [0, 1] * 15 and {"win", "loss"} <= set(outcomes)


@pytest.mark.parametrize("env_id", [CONNECT_FOUR, TICTACTOE])
def test_trained_masked_agents_never_play_invalid_moves(env_id):
    for algo, sees_mask in ((PPO, True), (MaskablePPO, False)):
        venv = make_masked_vec_env(env_id, 2, seed=0, sees_mask=sees_mask, needs_mask=True)
        policy = MaskedActorCriticPolicy if sees_mask else "MlpPolicy"
        model = algo(policy, venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
        model.learn(256)
        invalid = games = 0
        obs = venv.reset()
        for _ in range(120):
            if sees_mask:
                actions, _ = model.predict(obs, deterministic=False)
            else:
                masks = np.stack(venv.env_method("action_masks"))
                actions, _ = model.predict(obs, action_masks=masks, deterministic=False)
            obs, _, dones, infos = venv.step(actions)
            invalid += sum(info["invalid_action"] for info in infos)
            games += int(dones.sum())
        assert invalid == 0 and games > 5
        venv.close()


def test_lookahead_wins_if_it_can_and_blocks_if_it_must():
    player, rng = LookaheadOpponent(), np.random.default_rng(0)

    def connect_four(mine: list[tuple[int, int]], theirs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        board = np.zeros((6, 7, 2), np.int8)
        for channel, cells in ((0, mine), (1, theirs)):
            for cell in cells:
                board[(*cell, channel)] = 1
        return {"observation": board, "action_mask": (~board.any(axis=2)[0]).astype(np.int8)}

    # Three of ours stacked in column 2: play it. Three of theirs on the bottom row (cols 3-5): block at 2 or 6.
    win = connect_four([(5, 2), (4, 2), (3, 2)], [(5, 3), (5, 4), (5, 5)])
    assert all(player.act(win, rng) == 2 for _ in range(10))  # winning beats blocking
    block = connect_four([(5, 0), (4, 0)], [(5, 3), (5, 4), (5, 5)])
    assert {player.act(block, rng) for _ in range(20)} == {2, 6}
    # Their diagonal (5,1) (4,2) (3,3) needs (2,4): column 4 must hold 3 pieces first, so it is a block only then.
    diagonal = connect_four([(5, 4), (4, 4), (3, 4), (5, 2), (4, 3)], [(5, 1), (4, 2), (3, 3), (5, 3)])
    assert player.act(diagonal, rng) == 4
    not_yet = connect_four([(5, 4), (4, 4), (5, 2), (4, 3)], [(5, 1), (4, 2), (3, 3), (5, 3)])
    assert not player.wins_after(not_yet["observation"], 4, 1)

    def tictactoe(mine: list[int], theirs: list[int]) -> dict[str, np.ndarray]:
        board = np.zeros((3, 3, 2), np.int8)
        for channel, cells in ((0, mine), (1, theirs)):
            for cell in cells:
                board[(*divmod(cell, 3), channel)] = 1
        return {"observation": board, "action_mask": (~board.any(axis=2).ravel()).astype(np.int8)}

    assert player.act(tictactoe([0, 4], [1, 2]), rng) == 8  # our diagonal
    assert player.act(tictactoe([0, 5], [4, 2]), rng) == 6  # their anti-diagonal 2-4-6
    with pytest.raises(ValueError, match="knows connect four"):
        player.act({"observation": np.zeros((4, 4, 2)), "action_mask": np.ones(16)}, rng)
    # On the real game it beats random play nearly always.
    env = PettingZooAECEnv(connect_four_v3.env, opponent="random")
    wins = 0
    for game in range(20):
        obs, _ = env.reset(seed=game)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(player.act(obs, rng))
            done = terminated or truncated
        wins += info["outcome"] == "win"
    assert wins >= 17


def test_self_play_callback_snapshots_the_learner_into_every_pool():
    venv = DummyVecEnv([functools.partial(PettingZooAECEnv, tictactoe_v3.env) for _ in range(2)])
    assert isinstance(training_callbacks(venv)[0], SelfPlayCallback)
    assert training_callbacks(DummyVecEnv([lambda: PettingZooAECEnv(tictactoe_v3.env, opponent="random")])) == []
    model = PPO(MaskedActorCriticPolicy, venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    callback = SelfPlayCallback(threshold=0.05, window=10)
    model.learn(640, callback=callback)
    pools = venv.get_attr("opponent")
    assert callback.snapshots and all(len(pool.snapshots) == min(len(callback.snapshots), 10) for pool in pools)
    snapshot = pools[0].snapshots[-1]
    assert isinstance(snapshot, PolicyOpponent)
    assert snapshot.name == f"snapshot_{len(callback.snapshots)}@{callback.snapshots[-1]}"
    # Games against a snapshot: it plays its own seat's valid moves, drawn with the env's generator.
    env = PettingZooAECEnv(tictactoe_v3.env, opponent=snapshot)
    for game in range(10):
        obs, _ = env.reset(seed=game)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(RandomOpponent().act(obs, env.np_random))
            done = terminated or truncated
        assert info["opponent"] == snapshot.name
    pool = OpponentPool(max_snapshots=2)
    for k in range(3):
        pool.add(make_opponent("random"))
        assert len(pool.members) == 1 + min(k + 1, 2)
    with pytest.raises(ValueError, match="only a pool takes new opponents"):
        PettingZooAECEnv(tictactoe_v3.env, opponent="lookahead").add_opponent(snapshot)
    with pytest.raises(ValueError, match="unknown opponent 'best'"):
        make_opponent("best")


# ---------------------------------------------------------------------- names, safe loading and the command line
def test_pettingzoo_names_resolve_and_bad_ones_fail_in_one_line():
    assert resolve_pettingzoo_id(CONNECT_FOUR).kind == "aec" and is_turn_based(TICTACTOE)
    assert resolve_pettingzoo_id("pettingzoo:classic/connect_four-v3").kind == "aec"  # the registry's spelling
    assert resolve_pettingzoo_id(HERD).kind == "parallel" and not is_turn_based(HERD)
    assert not is_turn_based("maskrl/Kart-v0")
    description = describe_env(HERD)
    assert description.mask_source == "observation" and description.action_space == spaces.Discrete(5)
    assert describe_env(CONNECT_FOUR).observation_space["action_mask"].shape == (7,)
    with pytest.raises(ValueError, match="did you mean 'pettingzoo:classic/connect_four_v3'"):
        resolve_pettingzoo_id("pettingzoo:classic/conect_four_v3")
    with pytest.raises(ValueError, match="spelled pettingzoo:FAMILY/NAME"):
        resolve_pettingzoo_id("pettingzoo:classic.connect_four")
    with pytest.raises(ValueError, match="is a parallel PettingZoo env"):
        make_masked_env(HERD)
    assert check_env_id(CONNECT_FOUR) == CONNECT_FOUR
    for hostile in ("pettingzoo:../payload/x", "pettingzoo:os/system;x", "payload:Env-v0"):
        with pytest.raises(SafeLoadError, match="refusing"):
            check_env_id(hostile)


def test_cli_trains_and_evaluates_connect_four(tmp_path: Path, capsys) -> None:
    log_folder = tmp_path / "runs"
    train_main(
        [
            *("--env", CONNECT_FOUR, "-n", "1024", "--n-envs", "2", "--eval-freq", "512", "--eval-episodes", "2"),
            *("--hyperparams", "n_steps=256", "batch_size=256", "n_epochs=1", "--log-folder", str(log_folder)),
            *("--save-freq", "0", "-v", "0"),
        ]
    )
    run = log_folder / "ppo" / "connect_four_v3_1"
    assert (run / "best_model.zip").is_file()
    capsys.readouterr()
    out = tmp_path / "eval.json"
    evaluate_main([str(run), "-n", "4", "--opponent", "random", "lookahead", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "against random:" in printed and "against lookahead:" in printed
    results = json.loads(out.read_text())
    for name in ("random", "lookahead"):
        rates = results["opponents"][name]
        assert rates["win"] + rates["draw"] + rates["loss"] == pytest.approx(1.0)
        assert rates["invalid_action_rate"] == 0.0 and rates["episodes"] == 4
    video = tmp_path / "game.gif"
    evaluate_main([str(run), "-n", "1", "--video", str(video)])
    assert video.stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "pettingzoo:classic/conect_four_v3"], "did you mean 'pettingzoo:classic/connect_four_v3'"),
        (["--env", "pettingzoo:classic"], "a PettingZoo env is spelled pettingzoo:FAMILY/NAME"),
        (["--env", "connect_four_v3"], "did you mean 'pettingzoo:classic/connect_four_v3'"),
        (["--env", CONNECT_FOUR, "--env-kwargs", "opponent=best"], "unknown opponent 'best'"),
        (["--env", CONNECT_FOUR, "--env-kwargs", "colour=red"], "bad env kwargs for pettingzoo:classic/connect_four"),
        (["--env", "pettingzoo:classic/rps_v2"], "must be a Dict with an 'action_mask' key"),
    ],
)
def test_bad_pettingzoo_spellings_exit_2_with_one_line(argv, message, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as excinfo:
        train_main([*argv, "-n", "64", "--log-folder", str(tmp_path)])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # a refused run leaves no run folder


def test_herd_trains_from_the_command_line(tmp_path: Path, capsys) -> None:
    log_folder = tmp_path / "runs"
    train_main(
        [
            *("--env", HERD, "-n", "512", "--n-envs", "1", "--eval-freq", "256", "--eval-episodes", "2"),
            *("--env-kwargs", "max_steps=20", "--hyperparams", "n_steps=64", "batch_size=128", "n_epochs=1"),
            *("--save-freq", "0", "-v", "0", "--log-folder", str(log_folder)),
        ]
    )
    run = log_folder / "ppo" / "panda_herd_v0_1"
    assert (run / "best_model.zip").is_file()
    capsys.readouterr()
    evaluate_main([str(run), "-n", "4"])
    assert "watermelons_eaten" in capsys.readouterr().out
    with pytest.raises(SystemExit) as excinfo:
        evaluate_main([str(run), "-n", "1", "--opponent", "random"])
    assert excinfo.value.code == 2
    assert "--opponent is for turn-based PettingZoo games" in capsys.readouterr().err
