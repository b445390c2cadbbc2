"""Train-step throughput of our SE-ResNets vs torchvision ResNets (and timm SE-ResNets if installed).

Synthetic data, SGD, cross-entropy; every model is timed in the same process with the same settings.
CPU:  python benchmarks/models.py --batch 8 --size 64
H100: python benchmarks/models.py --device cuda --batch 256 --size 224 --channels-last --amp bf16 [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
from senet_dist.models import create_model  # noqa: E402
from senet_dist.models.table import count_params  # noqa: E402


@dataclass
class BenchConfig:
    device: str = "cpu"
    batch: int = 8
    size: int = 64
    steps: int = 10
    warmup: int = 3
    channels_last: bool = False
    compile: bool = False
    amp: str = "none"  # "none" | "bf16"
    num_classes: int = 1000
    repeats: int = 3  # rounds, models interleaved, so load from other processes hits all of them alike


def candidates() -> dict[str, Callable[[int], nn.Module]]:
    """Name -> factory(num_classes); timm's SE-ResNets are added when timm imports."""
    models: dict[str, Callable[[int], nn.Module]] = {
        "ours se_resnet18": lambda n: create_model("se_resnet18", num_classes=n),
        "torchvision resnet18": lambda n: torchvision.models.resnet18(num_classes=n),
        "ours se_resnet50": lambda n: create_model("se_resnet50", num_classes=n),
        "torchvision resnet50": lambda n: torchvision.models.resnet50(num_classes=n),
    }
    try:
        import timm
    except ImportError:
        return models
    models["timm seresnet18"] = lambda n: timm.create_model("seresnet18", num_classes=n)
    models["timm seresnet50"] = lambda n: timm.create_model("seresnet50", num_classes=n)
    return models


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, cfg: BenchConfig) -> Callable[[], None]:
    """One SGD train step on a fixed synthetic batch, in the configured format/precision."""
    device = torch.device(cfg.device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    step_model = torch.compile(model) if cfg.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(cfg.batch, 3, cfg.size, cfg.size, device=device).to(memory_format=fmt)
    y = torch.randint(0, cfg.num_classes, (cfg.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = nn.functional.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()

    return step


def time_steps(step: Callable[[], None], cfg: BenchConfig) -> float:
    """Images per second over ``cfg.steps`` timed steps after ``cfg.warmup`` untimed ones."""
    device = torch.device(cfg.device)
    for _ in range(cfg.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(cfg.steps):
        step()
    _sync(device)
    return cfg.batch * cfg.steps / (time.perf_counter() - start)


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, list[str] | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the table shows median and best")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    p.add_argument("--only", nargs="*", help="substrings of the model labels to run")
    a = p.parse_args(argv)
    if a.size < 32 or a.batch < 1 or a.steps < 1:
        p.error("need --size >= 32, --batch >= 1, --steps >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = BenchConfig(
        a.device, a.batch, a.size, a.steps, a.warmup, a.channels_last, a.compile, a.amp, repeats=max(1, a.repeats)
    )
    return cfg, a.only


def main(argv: list[str] | None = None) -> None:
    cfg, only = parse_args(argv)
    print(
        f"# device={cfg.device} batch={cfg.batch} size={cfg.size} steps={cfg.steps}x{cfg.repeats} "
        f"channels_last={cfg.channels_last} compile={cfg.compile} amp={cfg.amp} threads={torch.get_num_threads()} "
        f"torch={torch.__version__}"
    )
    labels = [lb for lb in candidates() if not only or any(s in lb for s in only)]
    steps, params, rates = {}, {}, {lb: [] for lb in labels}
    for label in labels:
        torch.manual_seed(0)
        model = candidates()[label](cfg.num_classes)
        params[label] = count_params(model) / 1e6
        steps[label] = make_step(model, cfg)
    for _ in range(cfg.repeats):
        for label in labels:
            rates[label].append(time_steps(steps[label], cfg))
    print("| model | params (M) | train img/s (median) | best |")
    print("|---|---|---|---|")
    for label in labels:
        print(f"| {label} | {params[label]:.2f} | {statistics.median(rates[label]):,.1f} | {max(rates[label]):,.1f} |")


if __name__ == "__main__":
    main()
