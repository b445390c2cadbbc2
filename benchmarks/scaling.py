"""Data-parallel scaling on this machine: the same training job with 1, 2, ... Ray workers (gloo on CPU).

The global batch is fixed, so every configuration does the same optimisation work per step; img/s is the
median per-epoch train throughput (slowest rank, all ranks' images) over epochs after the first (warm-up), and wall
includes Ray start-up, worker-group creation and checkpointing.

  python benchmarks/scaling.py --data SHARDS                      # 1 vs 2 workers, se_resnet_tiny, 3 epochs
  python benchmarks/scaling.py --workers 1,2,4 --model se_resnet18 --set model_kwargs='{stem: cifar, width: 16}'
Without --data it shards a Fashion-MNIST subset (300 images/class; lfw-subset if that is unavailable) into --workdir.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="shards root or version dir (default: build one in --workdir)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "senet-scaling"))
    p.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts")
    p.add_argument("--model", default="se_resnet_tiny")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split across workers)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    p.add_argument("--loader-workers", type=int, default=1)
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra TrainConfig overrides k=v")
    return p.parse_args(argv)


def default_data(workdir: Path) -> Path:
    from senet_dist.data import DatasetError, ShardConfig, fetch_dataset, shard_dataset

    cfg = ShardConfig(resize_shorter=None, image_format="png", max_count=250, progress=False)
    try:
        src = fetch_dataset("fashion-mnist", workdir / "fashion-mnist-300", limit_per_class=300)
    except DatasetError:
        src = fetch_dataset("lfw-subset", workdir / "lfw-subset")
        cfg = ShardConfig(resize_shorter=None, image_format="png", max_count=20, progress=False)
    return Path(shard_dataset(src, workdir / "shards", cfg).version_dir)


def run_one(n: int, version_dir: Path, args: argparse.Namespace, storage: Path) -> dict:
    from senet_dist.train import TrainConfig, fit

    overrides = {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "num_workers": n,
        "loader_workers": args.loader_workers,
        "max_steps_per_epoch": args.max_steps,
        "keep_best_n": 1,
        "max_failures": 0,
    }
    cfg = TrainConfig().with_overrides(overrides).with_overrides(args.sets)
    start = time.perf_counter()
    result = fit(args.model, version_dir, cfg, storage_path=storage, run_name=f"scaling-{n}w-{int(start)}")
    wall = time.perf_counter() - start
    timed = result.history[1:] or result.history
    return {
        "workers": n,
        "per_worker_batch": cfg.per_worker_batch_size,
        "steps": result.history[-1].steps,
        "img_per_s": statistics.median(h.img_per_s for h in timed),
        "epoch_s": statistics.median(h.epoch_seconds for h in timed),
        "wall_s": wall,
        "val_acc": result.history[-1].val_acc,
    }


def print_table(rows: list[dict], args: argparse.Namespace, version_dir: Path) -> None:
    base = rows[0]["img_per_s"]
    print(
        f"\n{args.model}, global batch {args.batch_size}, {args.epochs} epochs, data {version_dir}, "
        f"{os.cpu_count()} CPU cores"
    )
    print(
        "| Ray workers | batch/worker | steps/epoch | train img/s | speed-up | epoch s | wall s (incl. Ray start) |"
        " final val acc |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['per_worker_batch']} | {r['steps']} | {r['img_per_s']:.0f} | "
            f"{r['img_per_s'] / base:.2f}x | {r['epoch_s']:.1f} | {r['wall_s']:.1f} | {r['val_acc']:.3f} |"
        )


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    from senet_dist.data import resolve_version

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    version_dir = resolve_version(args.data) if args.data else default_data(workdir)
    rows = [run_one(int(n), version_dir, args, workdir / "runs") for n in args.workers.split(",")]
    print_table(rows, args, version_dir)
    return rows


if __name__ == "__main__":
    main()
