"""Pretrain a trajectory transformer on reward-free data with masked self-supervised objectives.

``python -m maskrl.representation.pretrain --data data/kart.npz --objectives forward inverse masked --out runs/pre``

Objectives (:mod:`maskrl.representation.objectives`), summed: ``forward`` (forward dynamics against a momentum
target encoder), ``inverse`` (inverse dynamics under the inverse-dynamics attention mask), ``masked`` (random masked
trajectory reconstruction with a masking curriculum). The output folder holds

=====================  ==========================================================================================
``tb/``                TensorBoard events, ``progress.csv``: ``pretrain/loss``, ``pretrain/loss_<objective>``,
                       ``pretrain/inverse_accuracy``, ``pretrain/masked_accuracy``, ``pretrain/forward_r2``,
                       ``pretrain/mask_ratio``, and the same on held-out episodes under ``pretrain_val/``
``checkpoints/``       ``pretrain_<step>.pt`` (model, optimizer, step; ``torch.save``, written atomically), the
                       last ``keep_checkpoints`` (2) of them
``encoder.pt``         the final encoder's ``state_dict`` (what fine-tuning needs, ``torch.load(weights_only=True)``)
``encoder.json``       its architecture, the objectives, the data and the final validation metrics
=====================  ==========================================================================================

Fine-tune with :class:`maskrl.policies.trajectory_extractor.TrajectoryExtractor` (``pretrained=<out folder>``).
The ``--data`` file and the encoder folders are read as hostile (nothing unpickled, sizes bounded; see
``docs/safe_loading.md``): a dataset or an encoder from someone else fails in one line rather than running code.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import Logger, configure

from maskrl.cli import ArgumentParser, UserError, positive_int, run_cli
from maskrl.files import atomic_write
from maskrl.policies.trajectory_transformer import TrajectoryConfig, save_encoder
from maskrl.representation.dataset import TrajectoryDataset, WindowSampler, load_dataset
from maskrl.representation.objectives import OBJECTIVES, TrajectoryPretrainer, check_objectives

__all__ = ["PretrainSettings", "main", "pretrain"]


@dataclass
class PretrainSettings:
    """Hyperparameters of :func:`pretrain` (model size, optimisation, objectives' knobs)."""

    objectives: tuple[str, ...] = OBJECTIVES
    window: int = 4
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    ema_momentum: float = 0.99
    mask_ratio_start: float = 0.2
    mask_ratio_end: float = 1.0
    obs_mask_ratio: float = 0.15
    val_fraction: float = 0.1
    log_interval: int = 50
    eval_interval: int = 250
    save_interval: int = 500
    keep_checkpoints: int = 2
    seed: int = 0


@torch.no_grad()
def evaluate(model: TrajectoryPretrainer, windows: tuple[torch.Tensor, ...], progress: float) -> dict[str, float]:
    """The objectives' metrics on fixed windows (e.g. held-out episodes), with a fixed masking seed."""
    model.eval()
    generator = torch.Generator().manual_seed(12345)
    _, metrics = model.loss(*windows, progress=progress, generator=generator)
    model.train()
    return {key: float(value) for key, value in metrics.items()}


def _save_checkpoint(model: TrajectoryPretrainer, optimizer: torch.optim.Optimizer, folder: Path, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    atomic_write(folder / f"pretrain_{step}.pt", lambda file: torch.save(state, file))


def _prune_checkpoints(folder: Path, keep: int) -> None:
    checkpoints = sorted(folder.glob("pretrain_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
    for old in checkpoints[:-keep] if keep > 0 else checkpoints:
        old.unlink(missing_ok=True)


def pretrain(
    dataset: TrajectoryDataset,
    out: Path,
    settings: PretrainSettings | None = None,
    logger: Logger | None = None,
    data_path: str | None = None,
) -> dict[str, Any]:
    """Pretrain on ``dataset`` and write the encoder, checkpoints and curves into ``out``.

    :param dataset: reward-free trajectories
    :param out: output folder (created)
    :param settings: hyperparameters (defaults: :class:`PretrainSettings`)
    :param logger: SB3 logger; by default TensorBoard + CSV + stdout into ``out/tb``
    :param data_path: recorded in ``encoder.json``
    :return: ``encoder.json``'s content plus ``history`` (validation metrics at each evaluation)
    :raises ValueError: for bad settings or a dataset too small to split
    """
    settings = settings or PretrainSettings()
    objectives = check_objectives(settings.objectives)
    if settings.steps < 1 or settings.batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    torch.manual_seed(settings.seed)
    train_data, val_data = dataset.split_episodes(settings.val_fraction)
    config = TrajectoryConfig(
        obs_dim=dataset.obs_dim,
        action_dim=dataset.action_dim,
        discrete=dataset.discrete,
        max_window=settings.window,
        d_model=settings.d_model,
        n_layers=settings.n_layers,
        n_heads=settings.n_heads,
    )
    model = TrajectoryPretrainer(
        config,
        objectives,
        ema_momentum=settings.ema_momentum,
        mask_ratio_start=settings.mask_ratio_start,
        mask_ratio_end=settings.mask_ratio_end,
        obs_mask_ratio=settings.obs_mask_ratio,
    )
    sampler = WindowSampler(train_data, settings.window, seed=settings.seed)
    val_windows = WindowSampler(val_data, settings.window).all_windows(max_windows=4096)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    out.mkdir(parents=True, exist_ok=True)
    if logger is None:
        logger = configure(str(out / "tb"), ["tensorboard", "csv", "stdout"])
    generator = torch.Generator().manual_seed(settings.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    running: dict[str, list[float]] = {}
    for step in range(1, settings.steps + 1):
        progress = (step - 1) / max(settings.steps - 1, 1)
        obs, actions, valid = sampler.sample(settings.batch_size)
        loss, metrics = model.loss(obs, actions, valid, progress=progress, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.update_target()
        for key, value in metrics.items():
            running.setdefault(key, []).append(float(value))
        if step % settings.log_interval == 0 or step == settings.steps:
            for key, values in running.items():
                logger.record(f"pretrain/{key}", float(np.mean(values)))
            logger.record("time/steps_per_second", step / (time.perf_counter() - start))
            running.clear()
            if step % settings.eval_interval == 0 or step == settings.steps:
                val = evaluate(model, val_windows, progress)
                for key, value in val.items():
                    logger.record(f"pretrain_val/{key}", value)
                history.append({"step": step, **val})
            logger.dump(step)
        if step % settings.save_interval == 0 or step == settings.steps:
            _save_checkpoint(model, optimizer, out / "checkpoints", step)
            _prune_checkpoints(out / "checkpoints", settings.keep_checkpoints)
    info = {
        "objectives": list(objectives),
        "settings": {**asdict(settings), "objectives": list(objectives)},
        "data": {"path": data_path, "steps": len(dataset), "episodes": dataset.n_episodes, **dataset.metadata},
        "final_validation": history[-1] if history else {},
        "seconds": time.perf_counter() - start,
    }
    save_encoder(model.encoder, out, info)
    logger.close()
    return {**info, "history": history}


def build_parser() -> argparse.ArgumentParser:
    defaults = PretrainSettings()
    parser = ArgumentParser(description="Pretrain a trajectory transformer on reward-free data.", prog="pretrain")
    parser.add_argument("--data", type=Path, required=True, help="dataset file from collect_trajectories")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, help="objectives, summed"
    )
    parser.add_argument("--window", type=positive_int, default=defaults.window, help="observations per window K")
    parser.add_argument("--d-model", type=positive_int, default=defaults.d_model)
    parser.add_argument("--n-layers", type=positive_int, default=defaults.n_layers)
    parser.add_argument("--n-heads", type=positive_int, default=defaults.n_heads)
    parser.add_argument("--steps", type=positive_int, default=defaults.steps, help="gradient steps")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="AdamW learning rate")
    parser.add_argument("--ema-momentum", type=float, default=defaults.ema_momentum)
    parser.add_argument("--mask-ratio-start", type=float, default=defaults.mask_ratio_start)
    parser.add_argument("--mask-ratio-end", type=float, default=defaults.mask_ratio_end)
    parser.add_argument("--obs-mask-ratio", type=float, default=defaults.obs_mask_ratio)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="held-out episodes")
    parser.add_argument("--save-interval", type=positive_int, default=defaults.save_interval)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""

    def _run() -> None:
        args = build_parser().parse_args(argv)
        settings = PretrainSettings(
            objectives=tuple(args.objectives),
            window=args.window,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            ema_momentum=args.ema_momentum,
            mask_ratio_start=args.mask_ratio_start,
            mask_ratio_end=args.mask_ratio_end,
            obs_mask_ratio=args.obs_mask_ratio,
            val_fraction=args.val_fraction,
            save_interval=args.save_interval,
            seed=args.seed,
        )
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {args.out} exists and is not a folder")
        try:
            dataset = load_dataset(args.data)
            result = pretrain(dataset, args.out, settings, data_path=str(args.data))
        except ValueError as error:
            raise UserError(str(error)) from None
        final = ", ".join(f"{key} {value:.4g}" for key, value in result["final_validation"].items() if key != "step")
        print(f"encoder written to {args.out}; held-out: {final}")

    run_cli(_run, "pretrain")


if __name__ == "__main__":
    main()
