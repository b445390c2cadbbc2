"""Epoch loops shared by the Ray worker and the GPU benchmark.

Each loop returns local *sums* (loss x n, correct, n); the caller reduces them across ranks once, because
per-rank evaluation batch counts differ and a per-batch collective would deadlock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from senet_dist.train.ema import ModelEma


@dataclass
class Amp:
    """Mixed-precision policy: ``bf16`` autocast (no scaler), ``fp16`` autocast + GradScaler, or ``fp32``."""

    precision: str
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def create(cls, precision: str, device: torch.device) -> Amp:
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        return cls(precision, device.type, scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)


@dataclass
class Sums:
    """Additive statistics of one loop on one rank."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0
    steps: int = 0

    def reduce(self) -> Sums:
        """Sum over ranks (one collective); seconds become the slowest rank's, which bounds throughput."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        t = torch.tensor([self.loss_sum, self.correct, self.count], dtype=torch.float64)
        dist.all_reduce(t)
        s = torch.tensor([self.seconds], dtype=torch.float64)
        dist.all_reduce(s, op=dist.ReduceOp.MAX)
        return Sums(t[0].item(), t[1].item(), t[2].item(), s.item(), self.steps)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def acc(self) -> float:
        return self.correct / max(self.count, 1)


@dataclass
class StepOptions:
    device: torch.device
    amp: Amp
    channels_last: bool = False
    grad_clip: float | None = None
    max_steps: int | None = None


def to_device(images: torch.Tensor, labels: torch.Tensor, opts: StepOptions) -> tuple[torch.Tensor, torch.Tensor]:
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    images = images.to(opts.device, non_blocking=True).contiguous(memory_format=fmt)
    return images, labels.to(opts.device, non_blocking=True)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    opts: StepOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on class indices or (N, C) probability targets (mixup/cutmix); returns (loss,
    logits) still on device so callers decide when to sync."""
    optimizer.zero_grad(set_to_none=True)
    with opts.amp.autocast():
        logits = model(images)
        loss = criterion(logits, targets)
    scaler = opts.amp.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if opts.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), logits.detach()


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    opts: StepOptions,
    on_step: Callable[[int], None] | None = None,
    *,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ema: ModelEma | None = None,
) -> Sums:
    """Train over ``loader`` (capped at ``opts.max_steps``); ``on_step(step)`` runs after each step (fault hook,
    progress). ``mix`` turns each batch into (mixed images, soft targets); accuracy then counts the dominant
    label. ``ema`` is updated after every optimizer step."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=opts.device)
    correct = torch.zeros((), dtype=torch.float64, device=opts.device)
    n, steps, start = 0, 0, time.perf_counter()
    for images, labels in loader:
        if opts.max_steps is not None and steps >= opts.max_steps:
            break
        images, labels = to_device(images, labels, opts)
        targets = labels
        if mix is not None:
            images, targets = mix(images, labels)
            labels = targets.argmax(1)
        loss, logits = train_step(model, images, targets, criterion, optimizer, opts)
        scheduler.step()
        if ema is not None:
            ema.update()
        loss_sum += loss.double() * labels.numel()
        correct += (logits.argmax(1) == labels).sum()
        n += labels.numel()
        steps += 1
        if on_step is not None:
            on_step(steps)
    if opts.device.type == "cuda":
        torch.cuda.synchronize(opts.device)
    return Sums(loss_sum.item(), correct.item(), float(n), time.perf_counter() - start, steps)


@torch.no_grad()
def eval_epoch(model: nn.Module, loader: Iterable, criterion: nn.Module, opts: StepOptions) -> Sums:
    """Evaluate the *unwrapped* model (no DDP collectives), so ranks may see different batch counts."""
    model.eval()
    loss_sum, correct, n, start = 0.0, 0, 0, time.perf_counter()
    for images, labels in loader:
        images, labels = to_device(images, labels, opts)
        with opts.amp.autocast():
            logits = model(images)
        loss_sum += criterion(logits.float(), labels).item() * labels.numel()
        correct += int((logits.argmax(1) == labels).sum())
        n += labels.numel()
    return Sums(loss_sum, float(correct), float(n), time.perf_counter() - start)
