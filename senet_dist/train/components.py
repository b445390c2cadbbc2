"""Ray-free construction of everything one rank trains with, shared by the worker and ``benchmarks/gpu.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from senet_dist.models import create_model
from senet_dist.models.table import count_params
from senet_dist.train.config import TrainConfig
from senet_dist.train.ema import ModelEma
from senet_dist.train.loops import Amp, StepOptions
from senet_dist.train.optim import build_optimizer, build_scheduler


@dataclass
class Components:
    model: nn.Module  # what the train loop calls (maybe DDP-wrapped and/or compiled)
    core: nn.Module  # the bare module: state_dict and evaluation
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    eval_criterion: nn.Module
    opts: StepOptions
    num_params: int
    num_classes: int
    ema: ModelEma | None = None  # the weights' moving average (cfg.ema.enabled), on the model's device


def build_components(
    cfg: TrainConfig,
    num_classes: int,
    device: torch.device,
    steps_per_epoch: int,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    core: nn.Module | None = None,
) -> Components:
    """Model (channels_last, then ``wrap`` e.g. Ray's prepare_model, then compile), optimizer, schedule, AMP.

    ``core`` overrides the registry model (the benchmark passes timm's seresnet50 through the same path).
    """
    on_gpu = device.type == "cuda"
    channels_last = cfg.resolved_channels_last(on_gpu)
    if core is None:
        core = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    if channels_last:
        core = core.to(memory_format=torch.channels_last)
    model = wrap(core) if wrap is not None else core.to(device)
    core = _bare(model)
    ema = ModelEma(core, cfg.ema) if cfg.ema.enabled else None
    optimizer = build_optimizer(core, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]  # a compiled module is called like the module
    opts = StepOptions(
        device=device,
        amp=Amp.create(cfg.resolved_precision(on_gpu), device),
        channels_last=channels_last,
        grad_clip=cfg.grad_clip,
        max_steps=cfg.max_steps_per_epoch,
    )
    return Components(
        model=model,
        core=core,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        eval_criterion=nn.CrossEntropyLoss(),
        opts=opts,
        num_params=count_params(core),
        num_classes=num_classes,
        ema=ema,
    )


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def restore(c: Components, state: dict[str, Any]) -> None:
    """Load a checkpoint's model/optimizer/scheduler/scaler state into freshly built components."""
    c.core.load_state_dict(state["model"])
    c.optimizer.load_state_dict(state["optimizer"])
    c.scheduler.load_state_dict(state["scheduler"])
    if c.opts.amp.scaler is not None and state.get("scaler"):
        c.opts.amp.scaler.load_state_dict(state["scaler"])
    if c.ema is not None and state.get("ema"):
        c.ema.load_state_dict(state["ema"])
    elif c.ema is not None:  # a checkpoint saved without EMA: the average restarts from its weights
        c.ema.module.load_state_dict(state["model"])


def training_state(c: Components) -> dict[str, Any]:
    scaler = c.opts.amp.scaler
    return {
        "model": c.core.state_dict(),
        "optimizer": c.optimizer.state_dict(),
        "scheduler": c.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": c.ema.state_dict() if c.ema is not None else None,  # {"model": state_dict, "updates": n}
    }
