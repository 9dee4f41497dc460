"""Tuning (``train.py -optimize``) with the embedded storage: a study in its tuning folder, no server.

Tiny budgets: PPO on maskrl/ToyMasked-v0 (episodes of 8 steps, returns 0 to 8), a few hundred steps per trial.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from tuning_worker import parse  # tests/ is on the path of its tests

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, parse_key_values
from maskrl.agents.registry import ALGOS, build_model
from maskrl.agents.search_spaces import SEARCH_SPACES, SearchContext, merge_hyperparams
from maskrl.agents.tuning import (
    BEST_HYPERPARAMS,
    REPORT,
    STUDY_LOG,
    TuningError,
    TuningOptions,
    run_tuning,
    stored_trial_hyperparams,
    trial_hyperparams,
    tune,
)

ENV = "maskrl/ToyMasked-v0"
STEPS = 512


def cli(text: str, *extra: str) -> argparse.Namespace:
    """train.py's arguments: ``text`` split as a shell does, then ``extra`` as they are (paths)."""
    return parse([*shlex.split(text), *extra])


def load(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="ppo-ToyMasked-v0", storage=_journal(folder))


def _journal(folder: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(folder / STUDY_LOG)))


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study as the command line runs it: 3 trials in all, 2 in parallel, no --storage."""
    log_folder = tmp_path_factory.mktemp("runs")
    args = parse(
        [
            "--algo",
            "ppo",
            "--env",
            ENV,
            "-n",
            str(STEPS),
            "--log-folder",
            str(log_folder),
            "-optimize",
            "--max-total-trials",
            "3",
            "--n-jobs",
            "2",
            "--sampler",
            "random",
            "--n-evaluations",
            "2",
            "--eval-episodes",
            "3",
        ]
    )
    return run_tuning(args)


def test_a_tiny_study_completes_in_its_folder_without_a_server(study_folder: Path) -> None:
    assert study_folder.parent.parent.name == "tuning"  # outside runs/ppo/, whose numbers count training runs
    assert (study_folder / STUDY_LOG).is_file()
    study = load(study_folder)
    # --max-total-trials caps the study exactly, with 2 threads claiming trials at the same time.
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2]  # --n-evaluations 2, the last one after training
        assert trial.value == trial.intermediate_values[2]
        assert 0.0 <= trial.value <= 8.0
        assert trial.user_attrs["hyperparams"]["n_envs"] == 4
        assert trial.user_attrs["invalid_action_rate"] == 0.0  # masked PPO never takes an invalid action
    report = (study_folder / REPORT).read_text()
    assert "3 trials (3 COMPLETE)" in report
    assert f"**Best:** trial {study.best_trial.number}" in report
    assert "## Parameter importance" in report and "learning_rate" in report


def test_the_best_hyperparameters_round_trip_into_a_model(study_folder: Path) -> None:
    best = load(study_folder).best_trial
    stored = best.user_attrs["hyperparams"]
    # The env file's format: --hyperparams-file style loading, or copying the section into ToyMasked-v0.yml.
    from_file = load_hyperparams(ENV, "ppo", path=study_folder / BEST_HYPERPARAMS)
    assert from_file == stored
    sections = yaml.safe_load((study_folder / BEST_HYPERPARAMS).read_text())
    assert list(sections) == ["ppo"]
    # The --hyperparams flags of the report give the same values back.
    report = (study_folder / REPORT).read_text()
    flags = report.split("as flags: `--hyperparams ", 1)[1].split("`", 1)[0]
    assert {**stored, **parse_key_values(shlex.split(flags), "--hyperparams")} == stored
    env = make_masked_vec_env(ENV, from_file["n_envs"], 0)
    try:
        model = build_model("ppo", env, from_file, seed=0)
        model.learn(from_file["n_steps"] * from_file["n_envs"])
        assert model.n_steps == stored["n_steps"] and model.batch_size == stored["batch_size"]
    finally:
        env.close()


def test_trial_id_returns_the_stored_hyperparameters(study_folder: Path) -> None:
    study = load(study_folder)
    for trial in study.trials:
        assert (
            trial_hyperparams(str(study_folder), trial.number, algo="ppo", env_id=ENV)
            == trial.user_attrs["hyperparams"]
        )
    # As train.py calls it: the tuning folder or its journal file, with or without the study's name.
    args = parse(["--algo", "ppo", "--env", ENV, "--storage", str(study_folder / STUDY_LOG), "--trial-id", "1"])
    assert stored_trial_hyperparams(args) == study.trials[1].user_attrs["hyperparams"]
    assert stored_trial_hyperparams(parse(["--algo", "ppo", "--env", ENV])) == {}
    with pytest.raises(TuningError, match="--trial-id needs --storage"):
        stored_trial_hyperparams(parse(["--algo", "ppo", "--env", ENV, "--trial-id", "1"]))
    with pytest.raises(TuningError, match="has no trial 7"):
        stored_trial_hyperparams(parse(["--env", ENV, "--storage", str(study_folder), "--trial-id", "7"]))
    with pytest.raises(TuningError, match="tuned --algo ppo"):
        stored_trial_hyperparams(
            parse(["--algo", "a2c", "--env", ENV, "--storage", str(study_folder), "--trial-id", "0"])
        )
    with pytest.raises(TuningError, match="no study nope"):
        stored_trial_hyperparams(
            parse(["--env", ENV, "--storage", str(study_folder), "--study-name", "nope", "--trial-id", "0"])
        )


def test_a_worker_with_other_settings_is_refused_and_leaves_nothing(study_folder: Path, tmp_path: Path) -> None:
    args = cli(
        f"--algo ppo --env {ENV} -n 1024 -optimize --n-trials 1",
        "--log-folder",
        str(tmp_path),
        "--storage",
        str(study_folder),
    )
    with pytest.raises(TuningError, match=r"was made with n_timesteps=512.*asks for n_timesteps=1024"):
        run_tuning(args)
    assert not list((tmp_path / "tuning" / "ppo").iterdir())
    assert len(load(study_folder).trials) == 3


def scripted(choices: dict[int, dict[str, Any]]):
    """A search space that gives trial ``n`` the hyperparameters ``choices[n]`` (n_steps 16 and 10 epochs, else)."""

    def space(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
        trial.suggest_float("learning_rate", 0.0, 1.0)  # a parameter, for the sampler and the report
        return {"n_steps": 16, "batch_size": 64, "n_epochs": 10, **choices[trial.number]}

    return space


def base() -> dict[str, Any]:
    return load_hyperparams(ENV, "ppo")


def test_a_diverging_trial_is_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    # A learning rate of 1e8 sends a ReLU network's weights to NaN within the first updates.
    space = scripted(
        {0: {"learning_rate": 1e8, "policy_kwargs": {"activation_fn": "relu"}}, 1: {"learning_rate": 1e-3}}
    )
    options = TuningOptions(n_trials=2, sampler="random", n_evaluations=2, n_eval_episodes=2)
    folder = tune("ppo", ENV, base(), STEPS, log_folder=tmp_path, options=options, search=space, device="cpu")
    first, second = load(folder).trials
    assert first.state == TrialState.FAIL
    assert "not finite" in first.user_attrs["fail_reason"]
    assert second.state == TrialState.COMPLETE
    assert "trial 0: DivergedError: the network's weights are not finite" in (folder / REPORT).read_text()


def test_the_median_pruner_stops_a_trial_whose_evaluations_are_worse(tmp_path: Path) -> None:
    # Trial 0 learns; trial 1 has a learning rate of 0, so its evaluations stay those of the untrained network, which
    # with the same seed is trial 0's starting point: below trial 0's evaluation at every step, pruned at the first.
    space = scripted({0: {"learning_rate": 3e-3}, 1: {"learning_rate": 0.0}})
    options = TuningOptions(
        n_trials=2, sampler="random", pruner="median", n_startup_trials=1, n_evaluations=4, n_eval_episodes=4
    )
    folder = tune("ppo", ENV, base(), STEPS, log_folder=tmp_path, options=options, search=space, device="cpu")
    learner, frozen = load(folder).trials
    assert learner.state == TrialState.COMPLETE and sorted(learner.intermediate_values) == [1, 2, 3, 4]
    assert frozen.state == TrialState.PRUNED
    # Pruned at the first evaluation the pruner may act on (n_warmup_steps = n_evaluations // 3 = 1): training stopped.
    assert sorted(frozen.intermediate_values) == [1]
    assert frozen.intermediate_values[1] < learner.intermediate_values[1]
    assert frozen.value == frozen.intermediate_values[1]


def test_every_algorithm_has_a_search_space_that_builds_a_model() -> None:
    assert set(SEARCH_SPACES) == set(ALGOS)
    for algo, spec in ALGOS.items():
        # ContrastivePPO wants pictures; every other algorithm trains on the toy env.
        env_id = "maskrl/PandaGridImage-v0" if algo == "ppo_contrastive" else ENV
        section = load_hyperparams(env_id, algo)
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        hyperparams = merge_hyperparams(section, SEARCH_SPACES[algo](trial, SearchContext(algo, 20_000, 4, section)))
        # Tuned keys only add to the section's policy_kwargs (a features extractor, n_quantiles stay).
        assert set(section.get("policy_kwargs") or {}) <= set(hyperparams["policy_kwargs"])
        env = make_masked_vec_env(env_id, 4, 0, sees_mask=spec.sees_mask, needs_mask=spec.needs_mask)
        try:
            build_model(algo, env, hyperparams, seed=0)
        finally:
            env.close()


def test_the_zoo_flags_parse_with_the_zoo_meanings() -> None:
    args = cli(
        "-optimize --n-trials 7 --max-total-trials 20 --n-jobs 2 --sampler random --pruner halving "
        "--n-startup-trials 0 --n-evaluations 5 --storage postgresql://h/db --study-name s --heartbeat-interval 5"
    )
    assert args.optimize_hyperparameters and args.n_trials == 7 and args.max_total_trials == 20
    assert (args.n_jobs, args.sampler, args.pruner, args.n_startup_trials) == (2, "random", "halving", 0)
    assert (args.n_evaluations, args.storage, args.study_name, args.trial_id) == (5, "postgresql://h/db", "s", None)
    assert parse(["--optimize-hyperparameters"]).optimize_hyperparameters
    defaults = parse([])
    assert not defaults.optimize_hyperparameters
    assert (defaults.n_trials, defaults.sampler, defaults.pruner, defaults.n_startup_trials) == (
        500,
        "tpe",
        "median",
        10,
    )
    with pytest.raises(SystemExit):
        parse(["--sampler", "skopt"])
    assert TuningOptions().evaluations(500_000) == 5 and TuningOptions().evaluations(20_000) == 1
    with pytest.raises(TuningError):
        TuningOptions(pruner="hyperband")


def test_refused_requests_are_one_line_errors(tmp_path: Path) -> None:
    def run(*extra: str) -> None:
        run_tuning(parse(["--env", ENV, "-n", "64", "--log-folder", str(tmp_path), "-optimize", *extra]))

    with pytest.raises(TuningError, match="not a database URL"):
        run("--storage", "postgresql://host:port/db")
    with pytest.raises(TuningError, match=r"cannot open the storage postgresql://u:\*\*\*@/db"):  # no password shown
        run("--storage", f"postgresql://u:secret@/db?host={tmp_path / 'no-server-here'}")
    with pytest.raises(TuningError, match=r"holds no study\.log"):
        run("--storage", str(tmp_path))
    with pytest.raises(TuningError, match="does not go with -optimize"):
        run("--trial-id", "3")
    with pytest.raises(TuningError, match="refused"):
        run("--hyperparams", "batch_size=0")
    assert not (tmp_path / "tuning" / "ppo").exists() or not list((tmp_path / "tuning" / "ppo").iterdir())
