"""Training-step throughput of the worker's exact step path (``senet_dist.train.loops.train_step``), world size 1.

Synthetic data already on the device, so this measures model + optimizer + AMP, not decode. Runs without Ray.
On CUDA it defaults to bf16 autocast + channels_last (what ``precision=auto``/``channels_last=auto`` pick) and, if
timm is importable, benchmarks timm's ``seresnet50`` through the same path for reference.

  python benchmarks/gpu.py                                  # H100: se_resnet50 (+ timm seresnet50), batch 256, 224 px
  python benchmarks/gpu.py --compile --models se_resnet50,se_resnet18
  python benchmarks/gpu.py --device cpu --steps 5           # smoke check on a CPU-only machine
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn

from senet_dist.train.components import build_components
from senet_dist.train.config import TrainConfig
from senet_dist.train.loops import train_step


@dataclass
class Row:
    model: str
    params_m: float
    batch: int
    image: int
    precision: str
    channels_last: bool
    compiled: bool
    img_per_s: float
    step_ms: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--models", default="se_resnet50", help="comma-separated registry names")
    p.add_argument("--steps", type=int, default=50, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10 on cuda, 1 on cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 on cuda, 8 on cpu")
    p.add_argument("--image-size", type=int, default=None, help="default 224 on cuda, 64 on cpu")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32")
    p.add_argument("--channels-last", default="auto", help="auto | true | false")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-timm", action="store_true", help="skip timm seresnet50 even if importable")
    return p.parse_args(argv)


def bench_one(name: str, core: nn.Module | None, args: argparse.Namespace, device: torch.device) -> Row:
    cl = {"auto": "auto", "true": True, "false": False}[args.channels_last]
    cfg = TrainConfig(
        model="se_resnet18" if core is not None else name,
        precision=args.precision,
        channels_last=cl,
        compile=args.compile,
        num_workers=1,
        batch_size=args.batch_size,
        use_gpu=device.type == "cuda",
    )
    comp = build_components(cfg, args.num_classes, device, steps_per_epoch=args.steps + args.warmup, core=core)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if comp.opts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    comp.model.train()
    for _ in range(args.warmup):
        train_step(comp.model, images, labels, comp.criterion, comp.optimizer, comp.opts)
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = train_step(comp.model, images, labels, comp.criterion, comp.optimizer, comp.opts)
    _sync(device)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{name}: non-finite loss {loss.item()}")
    seconds = time.perf_counter() - start
    return Row(
        name,
        comp.num_params / 1e6,
        args.batch_size,
        args.image_size,
        comp.opts.amp.precision,
        comp.opts.channels_last,
        args.compile,
        args.batch_size * args.steps / seconds,
        1000 * seconds / args.steps,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_table(rows: list[Row], device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndevice: {name}, torch {torch.__version__}")
    print("| model | params (M) | batch | px | precision | channels_last | compile | img/s | ms/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.model} | {r.params_m:.1f} | {r.batch} | {r.image} | {r.precision} | {r.channels_last} | "
            f"{r.compiled} | {r.img_per_s:,.0f} | {r.step_ms:.1f} |"
        )


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (256 if gpu else 8)
    args.image_size = args.image_size or (224 if gpu else 64)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    if gpu:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    rows = [bench_one(m.strip(), None, args, device) for m in args.models.split(",") if m.strip()]
    if not args.no_timm:
        try:
            import timm
        except ImportError:
            print("timm not importable: skipping timm seresnet50")
        else:
            rows.append(
                bench_one(
                    "timm seresnet50", timm.create_model("seresnet50", num_classes=args.num_classes), args, device
                )
            )
    print_table(rows, device)
    return rows


if __name__ == "__main__":
    main()
