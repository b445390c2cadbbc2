"""The function every Ray Train worker runs: build, maybe resume, then train/eval/report/checkpoint per epoch.

``config`` is ``{"train": TrainConfig.to_dict(), "version_dir": str}`` (plain data, so Ray can ship it).
Epochs are 1-based in metrics and checkpoints; a resumed attempt continues at ``checkpoint epoch + 1``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from senet_dist.data import DatasetInfo, LoaderConfig, make_loader
from senet_dist.train.checkpoint import load_checkpoint, save_checkpoint
from senet_dist.train.components import Components, build_components, restore, training_state
from senet_dist.train.config import TrainConfig
from senet_dist.train.loops import eval_epoch, fault_hook, train_epoch


def train_func_per_worker(config: dict[str, Any]) -> None:
    cfg = TrainConfig.from_dict(config["train"])
    version_dir = Path(config["version_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
    info = DatasetInfo.load(version_dir)
    device = ray.train.torch.get_device()
    lcfg = LoaderConfig(
        batch_size=cfg.per_worker_batch_size,
        image_size=cfg.image_size,
        num_workers=cfg.loader_workers,
        seed=cfg.seed,
        **cfg.loader_kwargs,
    )

    def loader(split: str, epoch: int, train: bool):
        return make_loader(version_dir, split, lcfg, rank=rank, world_size=world, epoch=epoch, train=train)

    steps = len(loader("train", 1, True))
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps < 1:
        raise RuntimeError(f"train split of {version_dir} yields no full batch of {lcfg.batch_size} per rank")
    comp = build_components(cfg, info.num_classes, device, steps, wrap=ray.train.torch.prepare_model)
    run = _resume(comp)
    for epoch in range(run["epoch"] + 1, cfg.epochs + 1):
        hook = fault_hook(rank, epoch, cfg.fault_kill_rank, cfg.fault_kill_epoch, cfg.fault_kill_after_steps,
                          cfg.fault_marker, before_kill=_wait_for_reported_checkpoints)
        start, lr = time.perf_counter(), comp.optimizer.param_groups[0]["lr"]  # lr this epoch starts at
        tr = train_epoch(comp.model, loader("train", epoch, True), comp.criterion, comp.optimizer,
                         comp.scheduler, comp.opts, on_step=hook).reduce()
        va = eval_epoch(comp.core, loader("val", epoch, False), comp.eval_criterion, comp.opts).reduce()
        stop = should_stop(run, va.acc, cfg.patience) and epoch < cfg.epochs
        metrics = {
            "epoch": epoch,
            "train_loss": tr.loss,
            "train_acc": tr.acc,
            "val_loss": va.loss,
            "val_acc": va.acc,
            "best_val_acc": run["best_val_acc"],
            "lr": lr,
            "img_per_s": tr.count / max(tr.seconds, 1e-9),
            "train_s": tr.seconds,
            "epoch_s": time.perf_counter() - start,
            "steps": tr.steps,
            "world_size": world,
            "resumed_from_epoch": run["resumed_from"],
            "stopped_early": stop,
        }
        run["history"].append(metrics)
        run["epoch"] = epoch
        _report(metrics, comp, cfg, info, run, rank)
        if stop:
            break


def _wait_for_reported_checkpoints() -> None:
    ray.train.get_all_reported_checkpoints(timeout_s=60)


def should_stop(run: dict[str, Any], val_acc: float, patience: int | None) -> bool:
    """Update best/bad-epoch counters in ``run``; True once ``patience`` epochs passed without a new best."""
    improved = val_acc > run["best_val_acc"]
    run["best_val_acc"] = max(run["best_val_acc"], val_acc)
    run["bad_epochs"] = 0 if improved else run["bad_epochs"] + 1
    return patience is not None and run["bad_epochs"] >= patience


def _resume(comp: Components) -> dict[str, Any]:
    """Load the latest Ray checkpoint (after a failure or a reused run name), else start fresh."""
    run: dict[str, Any] = {"epoch": 0, "best_val_acc": -1.0, "bad_epochs": 0, "history": [], "resumed_from": 0}
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return run
    with ckpt.as_directory() as d:
        state = load_checkpoint(d, map_location="cpu")
    restore(comp, state)
    run.update(state["run"])
    run["resumed_from"] = state["run"]["epoch"]
    return run


def _report(metrics: dict, comp: Components, cfg: TrainConfig, info: DatasetInfo, run: dict, rank: int) -> None:
    """All ranks report (it is a barrier); rank 0 attaches the checkpoint, written to a temp dir Ray uploads."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    meta = {
        "run_name": ray.train.get_context().get_experiment_name(),
        "epoch": run["epoch"],
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "num_classes": info.num_classes,
        "classes": list(info.classes),
        "dataset_fingerprint": info.fingerprint,
        "dataset_version": info.version,
        "image_size": cfg.image_size,
        "num_params": comp.num_params,
        "metrics": metrics,
        "history": run["history"],
        "config": cfg.to_dict(),
    }
    state = training_state(comp) | {"run": {k: run[k] for k in ("epoch", "best_val_acc", "bad_epochs", "history")},
                                    "config": cfg.to_dict(), "meta": meta}
    with tempfile.TemporaryDirectory(prefix="senet-ckpt-") as tmp:
        save_checkpoint(tmp, state, meta)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
