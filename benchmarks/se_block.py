"""Where a train step's time goes, and which SE formulation is cheapest (CPU; profile-driven, no timed asserts).

Three tables, all timed as *thread CPU time* (single torch thread) as well as wall time, because the project VM is
shared: CPU seconds are what the step costs, wall seconds also count time other processes held the core.
1. SE block formulations, forward+backward at se_resnet50's stage shapes (channels_last and contiguous).
2. torch.profiler op breakdown of one se_resnet50 train step: what share is SE (mean, 1x1 convs, sigmoid, mul).
3. Whole-model train step: ours vs timm (if importable) vs torchvision, interleaved repeats, medians.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/se_block.py [--batch 8] [--size 64] [--repeats 5]
    python benchmarks/se_block.py --device cuda --batch 256 --size 224 --tables 1,3    # H100 A/B of the same rows
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from senet_dist.models import create_model

SE_OPS = ("aten::mean", "aten::sigmoid", "aten::mul", "aten::addcmul", "aten::addmm", "aten::linear")


def _gate_conv(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """(N, C, 1, 1) gate: pooled map -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid."""
    s = x.mean((2, 3), keepdim=True)
    return F.conv2d(F.relu(F.conv2d(s, w1, b1), inplace=True), w2, b2).sigmoid()


def _gate_linear(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """Same maths on the flattened (N, C) vector: two addmm instead of two convolutions on 1x1 maps."""
    s = x.mean((2, 3))
    g = F.linear(F.relu(F.linear(s, w1.flatten(1), b1), inplace=True), w2.flatten(1), b2).sigmoid()
    return g[:, :, None, None]


def _gate_pool(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """adaptive_avg_pool2d squeeze (timm/torchvision style) + linear excitation."""
    s = F.adaptive_avg_pool2d(x, 1).flatten(1)
    g = F.linear(F.relu(F.linear(s, w1.flatten(1), b1), inplace=True), w2.flatten(1), b2).sigmoid()
    return g[:, :, None, None]


def _mul_then_add(x: torch.Tensor, gate: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    out = x * gate  # what timm and the original block do: one pass to scale ...
    out += shortcut  # ... and a second pass over the map to add the identity
    return out


def _addcmul(x: torch.Tensor, gate: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shortcut, x, gate)  # one pass: shortcut + x * gate


# SE on the residual branch followed by the identity addition, exactly the tail of an SE-ResNet block.
SE_VARIANTS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "conv1x1 gate, x*g then +=shortcut (ours, timm)": (_gate_conv, _mul_then_add),
    "adaptive_avg_pool2d + linear gate, x*g then +=": (_gate_pool, _mul_then_add),
    "linear gate, x*g then +=shortcut": (_gate_linear, _mul_then_add),
    "conv1x1 gate, addcmul(shortcut, x, g)": (_gate_conv, _addcmul),
    "linear gate, addcmul(shortcut, x, g)": (_gate_linear, _addcmul),
}


DEVICE = torch.device("cpu")  # --device; on CUDA only the wall column means anything


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn: Callable[[], Any], iters: int) -> tuple[float, float]:
    """(thread CPU ms, wall ms) per call."""
    fn()
    _sync()
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(iters):
        fn()
    _sync()
    return 1000 * (time.thread_time() - c0) / iters, 1000 * (time.perf_counter() - w0) / iters


def _tail_step(
    gate_fn: Callable[..., torch.Tensor],
    combine: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sc: torch.Tensor,
    ws: list[torch.Tensor],
    grad: torch.Tensor,
) -> None:
    y = x * 1.0  # the SE input is a non-leaf, as in the network
    combine(y, gate_fn(y, *ws), sc * 1.0).relu_().backward(grad)


def se_table(batch: int, size: int, repeats: int, iters: int) -> None:
    stages = [(256, size // 4), (512, size // 8), (1024, size // 16), (2048, size // 32)]
    print(
        f"\n## 1. SE + residual add + ReLU (block tail) fwd+bwd, batch {batch}, "
        f"se_resnet50 stage shapes at {size} px input "
        f"(median of {repeats} x {iters} calls; thread CPU ms, wall ms)"
    )
    print(
        "| formulation | layout | "
        + " | ".join(f"C={c} {max(h, 1)}x{max(h, 1)}" for c, h in stages)
        + " | sum CPU ms |"
    )
    print("|---|---|" + "---|" * len(stages) + "---|")
    for fmt_name, fmt in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
        for name, (gate_fn, combine) in SE_VARIANTS.items():
            cells, total = [], 0.0
            for c, h in stages:
                h = max(h, 1)
                d = DEVICE
                x = torch.randn(batch, c, h, h, device=d).contiguous(memory_format=fmt).requires_grad_()
                ws = [
                    torch.randn(c // 16, c, 1, 1, device=d, requires_grad=True),
                    torch.zeros(c // 16, device=d, requires_grad=True),
                    torch.randn(c, c // 16, 1, 1, device=d, requires_grad=True),
                    torch.zeros(c, device=d, requires_grad=True),
                ]
                sc = torch.randn(batch, c, h, h, device=d).contiguous(memory_format=fmt).requires_grad_()
                grad = torch.randn(batch, c, h, h, device=d).contiguous(memory_format=fmt)
                step = functools.partial(_tail_step, gate_fn, combine, x, sc, ws, grad)
                runs = [timed(step, iters) for _ in range(repeats)]
                cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
                cells.append(f"{cpu:.3f} / {wall:.3f}")
                total += cpu
            print(f"| {name} | {fmt_name} | " + " | ".join(cells) + f" | {total:.3f} |")


def train_step_fn(model: nn.Module, batch: int, size: int, channels_last: bool) -> Callable[[], None]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(DEVICE, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=DEVICE).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=DEVICE)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def profile_table(batch: int, size: int, channels_last: bool) -> None:
    """Self CPU time per op of one se_resnet50 step, and the SE blocks' share via record_function scopes."""
    torch.manual_seed(0)
    model = create_model("se_resnet50")
    step = train_step_fn(model, batch, size, channels_last)
    step(), step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"\n## 2. torch.profiler, se_resnet50 train step (3 steps), batch {batch}, {size} px, "
        f"channels_last={channels_last}: self CPU time by op (top 12)"
    )
    print("| op | calls | self CPU ms | share |")
    print("|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1000:.1f} | {e.self_cpu_time_total / total:.1%} |")
    se_like = sum(
        e.self_cpu_time_total
        for e in events
        if any(e.key.startswith(k) for k in SE_OPS) or "sigmoid" in e.key or "mean" in e.key.lower()
    )
    print(
        f"SE-type ops (mean, sigmoid, mul, addmm/linear and their backward kernels): {se_like / total:.1%} of "
        f"self CPU time; total {total / 3000:.1f} ms per step"
    )


def models() -> dict[str, Callable[[], nn.Module]]:
    out: dict[str, Callable[[], nn.Module]] = {
        "ours se_resnet18": lambda: create_model("se_resnet18"),
        "ours se_resnet50": lambda: create_model("se_resnet50"),
        "torchvision resnet18 (no SE)": lambda: torchvision.models.resnet18(),
        "torchvision resnet50 (no SE)": lambda: torchvision.models.resnet50(),
    }
    try:
        import timm
    except ImportError:
        return out
    out["timm seresnet18"] = lambda: timm.create_model("seresnet18")
    out["timm seresnet50"] = lambda: timm.create_model("seresnet50")
    return out


def model_table(batch: int, size: int, repeats: int, steps: int, channels_last: bool) -> None:
    factories = models()
    fns = {}
    for label, make in factories.items():
        torch.manual_seed(0)
        fns[label] = train_step_fn(make(), batch, size, channels_last)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved: background load hits every model alike
        for label, fn in fns.items():
            runs[label].append(timed(fn, steps))
    print(
        f"\n## 3. Train step, batch {batch}, {size} px, channels_last={channels_last}, SGD, 1 thread "
        f"(median of {repeats} x {steps} steps)"
    )
    print("| model | CPU ms/step | img per CPU s | wall ms/step | ours vs timm (CPU) |")
    print("|---|---|---|---|---|")
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}
    for label, (cpu, wall) in med.items():
        ratio = ""
        if label.startswith("ours"):
            ref = "timm se" + label.split("se_")[-1]
            ratio = f"{med[ref][0] / cpu:.3f}x" if ref in med else "timm missing"
        print(f"| {label} | {cpu:.1f} | {1000 * batch / cpu:.1f} | {wall:.1f} | {ratio} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="train steps per repeat (table 3)")
    p.add_argument("--iters", type=int, default=20, help="SE calls per repeat (table 1)")
    p.add_argument("--tables", default="1,2,3", help="table 2 (profiler) runs on the CPU only")
    p.add_argument("--device", default="cpu", help="cpu | cuda: tables 1 and 3 on the GPU (read the wall column)")
    a = p.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(a.device)
    torch.set_num_threads(1)
    print(f"# torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, 1 thread, device {DEVICE}")
    tables = set(a.tables.split(","))
    if "1" in tables:
        se_table(a.batch, a.size, a.repeats, a.iters)
    if "2" in tables and DEVICE.type == "cpu":
        profile_table(a.batch, a.size, channels_last=True)
    if "3" in tables:
        for cl in (True, False):
            model_table(a.batch, a.size, a.repeats, a.steps, cl)


if __name__ == "__main__":
    main()
