"""End-to-end single-device throughput: the worker's train step fed by our shard loader vs by a synthetic batch.

Both sides run ``senet_dist.train.loops.train_step`` on the same components in one process (no Ray, world size 1),
so the ratio "shards / synthetic" is exactly how much the data path costs. Without ``--data`` it generates
500x375 photo-like JPEGs (benchmarks/data.py) and shards them with the given ``--resize`` (256 = pre-resized).

  H100:  python benchmarks/e2e.py --model se_resnet50 --batch 256 --image-size 224 --loader-workers 12 \\
             --gpu-decode --images 8192 --steps 60               # + --compile; drop --gpu-decode for the CPU path
  CPU:   OMP_NUM_THREADS=1 .venv/bin/python benchmarks/e2e.py   # se_resnet_tiny, 64 px, 2 loader workers
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from senet_dist.data import LoaderConfig, ShardConfig, make_loader, shard_dataset
from senet_dist.train.components import build_components
from senet_dist.train.config import TrainConfig
from senet_dist.train.loops import to_device, train_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset version dir (default: generate + shard --images photos)")
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--resize", type=int, default=256, help="resize_shorter for generated shards (0: originals)")
    p.add_argument("--model", default="se_resnet_tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="default 256 on cuda, 32 on cpu")
    p.add_argument("--image-size", type=int, default=None, help="default 224 on cuda, 64 on cpu")
    p.add_argument("--steps", type=int, default=15, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--prefetch", type=int, default=4, help="batches in flight per loader worker")
    p.add_argument("--gpu-decode", action="store_true", help="ship JPEG bytes, decode with nvjpeg on the device")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args(argv)


def make_data(args: argparse.Namespace, tmp: Path) -> Path:
    from data import make_photos  # benchmarks/data.py

    make_photos(tmp / "photos", args.images, (500, 375))
    cfg = ShardConfig(
        resize_shorter=args.resize or None,
        fractions=(0.98, 0.01, 0.01),
        progress=False,
        max_count=max(8, args.images // (4 * max(1, args.loader_workers))),
    )
    return Path(shard_dataset(tmp / "photos", tmp / "shards", cfg).version_dir)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(comp, batches, device: torch.device, steps: int, warmup: int) -> float:
    """img/s over ``steps`` steps after ``warmup``; ``batches`` yields (images, labels) on the CPU or device."""
    it = iter(batches)
    n = 0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start, n = time.perf_counter(), 0
        images, labels = to_device(*next(it), comp.opts)
        train_step(comp.model, images, labels, comp.criterion, comp.optimizer, comp.opts)
        n += labels.numel()
    _sync(device)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    batch, size = args.batch or (256 if gpu else 32), args.image_size or (224 if gpu else 64)
    if gpu:
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="senet-e2e-") as tmp:
        version_dir = Path(args.data) if args.data else make_data(args, Path(tmp))
        total = args.warmup + args.steps
        lcfg = LoaderConfig(
            batch_size=batch,
            image_size=size,
            num_workers=args.loader_workers,
            gpu_decode=args.gpu_decode,
            steps_per_epoch=total,
            persistent_workers=False,
            prefetch_factor=args.prefetch,
            pin_memory=gpu,
            device=str(device) if gpu else None,
        )
        cfg = TrainConfig(model=args.model, compile=args.compile, num_workers=1, batch_size=batch, use_gpu=gpu)
        torch.manual_seed(0)
        comp = build_components(cfg, 1000, device, steps_per_epoch=total * args.repeats * 2)
        fmt = torch.channels_last if comp.opts.channels_last else torch.contiguous_format
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 1000, (batch,), device=device)
        rates: dict[str, list[float]] = {"synthetic (tensor on device)": [], "shards (loader)": []}
        for rep in range(args.repeats):  # interleaved
            rates["synthetic (tensor on device)"].append(
                run(comp, iter(lambda: (x, y), None), device, args.steps, args.warmup)
            )
            loader = make_loader(version_dir, "train", lcfg, epoch=rep)
            rates["shards (loader)"].append(run(comp, loader, device, args.steps, args.warmup))
    best = {k: max(v) for k, v in rates.items()}
    dev_name = torch.cuda.get_device_name(device) if gpu else f"cpu ({os.cpu_count()} cores)"
    print(
        f"\n# {time.strftime('%Y-%m-%d')} {dev_name}, torch {torch.__version__}; {args.model}, batch {batch}, "
        f"{size} px, {comp.opts.amp.precision}, channels_last={comp.opts.channels_last}, compile={args.compile}; "
        f"loader_workers={args.loader_workers}, gpu_decode={args.gpu_decode}, prefetch={args.prefetch}, "
        f"shards resize_shorter={args.resize or 'originals'}; best of {args.repeats} x {args.steps} steps"
    )
    print("| input | img/s | vs synthetic |\n|---|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v:,.1f} | {v / best['synthetic (tensor on device)']:.1%} |")
    return best


if __name__ == "__main__":
    main()
