"""The function every Ray Train worker runs: build, maybe resume, then train/eval/report/checkpoint per epoch.

``config`` is ``{"args": WorkerArgs}`` (Ray's ``train_loop_config`` must be a dict; the value is typed).
Epochs are 1-based in metrics and checkpoints; a resumed attempt continues at ``checkpoint epoch + 1``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray.train
import ray.train.torch
import torch

from senet_dist.data import DatasetInfo, Loader, make_loader
from senet_dist.data.preprocess import Preprocess
from senet_dist.train.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from senet_dist.train.components import Components, build_components, restore, training_state
from senet_dist.train.config import TrainConfig
from senet_dist.train.faults import FaultPlan
from senet_dist.train.loops import eval_epoch, train_epoch
from senet_dist.train.mixup import mixup_for_epoch
from senet_dist.train.progress import StepMeter, print_event
from senet_dist.train.results import EpochMetrics


@dataclass(frozen=True)
class WorkerArgs:
    train: TrainConfig
    version_dir: str
    fault: FaultPlan | None = None  # tests only (senet_dist.train.faults)
    progress_board: Any = None  # a ProgressBoard actor handle; None: rank 0 prints progress lines
    storage_env: dict[str, str] = field(default_factory=dict)  # the driver's AWS_* settings, keys only on opt-in


@dataclass
class RunState:
    """What a run carries from epoch to epoch, and across a restart through the checkpoint."""

    epoch: int = 0
    best_val_acc: float = -1.0
    bad_epochs: int = 0
    history: list[EpochMetrics] = field(default_factory=list)
    resumed_from: int = 0

    def should_stop(self, score: float, patience: int | None) -> bool:
        """Update the best/bad-epoch counters with this epoch's ``keep_best_by`` value; True once ``patience``
        epochs passed without a new best."""
        improved = score > self.best_val_acc
        self.best_val_acc = max(self.best_val_acc, score)
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return patience is not None and self.bad_epochs >= patience

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "best_val_acc": self.best_val_acc,
            "bad_epochs": self.bad_epochs,
            "history": [h.to_dict() for h in self.history],
        }


def train_func_per_worker(config: dict[str, Any]) -> None:
    quiet_report_logs()
    args: WorkerArgs = config["args"]
    os.environ.update(args.storage_env)  # shards on object storage: this worker and its loader processes read them
    cfg, version_dir = args.train, args.version_dir
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
    info = DatasetInfo.load(version_dir)
    lcfg = cfg.loader_config()

    def loader(split: str, epoch: int, train: bool) -> Loader:
        return make_loader(info, split, lcfg, rank=rank, world_size=world, epoch=epoch, train=train)

    steps = len(loader("train", 1, True))
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps < 1:
        raise RuntimeError(f"train split of {version_dir} yields no full batch of {lcfg.batch_size} per rank")
    comp = build_components(
        cfg, info.num_classes, ray.train.torch.get_device(), steps, wrap=ray.train.torch.prepare_model
    )
    run = _resume(comp)
    meter = _meter(args, cfg) if rank == 0 else None
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        fault = args.fault.hook(rank, epoch, before_kill=_wait_for_reported_checkpoints) if args.fault else None
        if meter is not None:
            meter.start_epoch(epoch, steps)
        start, lr = time.perf_counter(), comp.optimizer.param_groups[0]["lr"]  # lr this epoch starts at
        tr = train_epoch(
            comp.model,
            loader("train", epoch, True),
            comp.criterion,
            comp.optimizer,
            comp.scheduler,
            comp.opts,
            on_step=_hooks(fault, meter),
            mix=mixup_for_epoch(cfg.mixup, info.num_classes, epoch, seed=cfg.seed, rank=rank),
            ema=comp.ema,
        ).reduce()
        va = eval_epoch(comp.core, loader("val", epoch, False), comp.eval_criterion, comp.opts).reduce()
        ema_va = (
            eval_epoch(comp.ema.module, loader("val", epoch, False), comp.eval_criterion, comp.opts).reduce()
            if comp.ema is not None
            else None
        )
        score = ema_va.acc if cfg.keep_best_by == "ema_val_acc" and ema_va is not None else va.acc
        stop = run.should_stop(score, cfg.patience) and epoch < cfg.epochs
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=tr.loss,
            train_acc=tr.acc,
            val_loss=va.loss,
            val_acc=va.acc,
            best_val_acc=run.best_val_acc,
            lr=lr,
            img_per_s=tr.count / max(tr.seconds, 1e-9),
            train_seconds=tr.seconds,
            epoch_seconds=time.perf_counter() - start,
            steps=tr.steps,
            world_size=world,
            resumed_from_epoch=run.resumed_from,
            stopped_early=stop,
            ema_val_loss=ema_va.loss if ema_va is not None else None,
            ema_val_acc=ema_va.acc if ema_va is not None else None,
        )
        run.history.append(metrics)
        run.epoch = epoch
        _report(metrics, comp, cfg, info, run, rank)
        if stop:
            break


def quiet_report_logs() -> None:
    """Drop Ray Train's per-rank ``Reporting training result ...: TrainingReport(...)`` INFO line at every report.

    Ray Train 2.60 logs it through ``logging.getLogger(__file__)`` (a logger named by the file's path), which
    propagates to the root logger, so ``RunConfig(logging_config=LoggingConfig("WARNING"))`` (the launcher sets it;
    it filters ``ray.train.*`` names only) misses it. Warnings from that module still show."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _meter(args: WorkerArgs, cfg: TrainConfig) -> StepMeter:
    board = args.progress_board
    emit = print_event if board is None else board.put.remote
    return StepMeter(emit, epochs=cfg.epochs, images_per_step=cfg.batch_size)


def _hooks(*hooks: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """One ``on_step`` callback running each given hook in order (None when there is none)."""
    active = [h for h in hooks if h is not None]
    if not active:
        return None

    def run_all(step: int) -> None:
        for hook in active:
            hook(step)

    return run_all


def _wait_for_reported_checkpoints() -> None:
    ray.train.get_all_reported_checkpoints(timeout_s=60)


def _resume(comp: Components) -> RunState:
    """Load the latest Ray checkpoint (after a failure or a reused run name), else start fresh."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return RunState()
    with ckpt.as_directory() as d:
        state = load_checkpoint(d, map_location="cpu")
    restore(comp, state)
    saved = state["run"]
    return RunState(
        epoch=saved["epoch"],
        best_val_acc=saved["best_val_acc"],
        bad_epochs=saved["bad_epochs"],
        history=[EpochMetrics.from_dict(h) for h in saved["history"]],
        resumed_from=saved["epoch"],
    )


def _report(
    metrics: EpochMetrics, comp: Components, cfg: TrainConfig, info: DatasetInfo, run: RunState, rank: int
) -> None:
    """All ranks report (it is a barrier); rank 0 attaches the checkpoint, written to a temp dir Ray uploads."""
    if rank != 0:
        ray.train.report(metrics.to_dict(), checkpoint=None)
        return
    saved = run.to_dict()
    meta = CheckpointMeta(
        run_name=ray.train.get_context().get_experiment_name(),
        epoch=run.epoch,
        model=cfg.model,
        model_kwargs=cfg.model_kwargs,
        num_classes=info.num_classes,
        classes=list(info.classes),
        dataset_fingerprint=info.fingerprint,
        dataset_version=info.version,
        image_size=cfg.image_size,
        preprocess=Preprocess.from_loader(cfg.loader, cfg.image_size),
        num_params=comp.num_params,
        metrics=metrics,
        keep_best_by=cfg.keep_best_by,
        better_weights=metrics.better_weights,  # what evaluation uses: "model" or "ema" (on val)
        history=run.history,
        config=cfg.to_dict(),
    )
    state = training_state(comp) | {"run": saved, "config": cfg.to_dict()}
    with tempfile.TemporaryDirectory(prefix="senet-ckpt-") as tmp:
        save_checkpoint(tmp, state, meta)
        ray.train.report(metrics.to_dict(), checkpoint=ray.train.Checkpoint.from_directory(tmp))
