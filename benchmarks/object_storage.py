"""Training-stream img/s from shards on object storage (a local moto S3 server) vs the same shards on local disk.

Same shards, same run, interleaved repeats: the training view of the loader (decode + augment + collate in the
DataLoader workers, normalise in the Loader), 1 and 2 loader workers. The S3 side reads through data/reader.py
(ranged GETs, retries, read-ahead of the next shard); nothing is copied to local disk. Goal: >= 0.8x local.

    .venv/bin/python benchmarks/object_storage.py [--dataset fashion-mnist:500] [--epochs 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs
import torch

from senet_dist.data import DatasetInfo, LoaderConfig, ShardConfig, fetch_dataset, shard_dataset
from senet_dist.data.loader import Loader
from senet_dist.data.stream import ShardStream
from senet_dist.data.transforms import ImageDecoder, build_transform, uint8_collate
from senet_dist.storage import upload_dir

BUCKET = "bench"


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port; returns (process, endpoint)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    cmd = str(exe) if exe.exists() else shutil.which("moto_server")
    if cmd is None:
        raise SystemExit("moto_server not installed (pip install 'moto[server]')")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"moto_server did not start (log: {log})") from None
            time.sleep(0.1)


def use_endpoint(endpoint: str) -> None:
    """Point the standard AWS settings at the local server (what a MinIO deployment sets) and make the bucket."""
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1"
    )
    host = endpoint.split("://", 1)[1]
    fs = pafs.S3FileSystem(
        endpoint_override=host, scheme="http", region="us-east-1", access_key="bench", secret_key="bench",
        allow_bucket_creation=True,
    )  # fmt: skip
    fs.create_dir(BUCKET)


def training_loader(shards: list[tuple[str, int]], info: DatasetInfo, cfg: LoaderConfig) -> Loader:
    """The training loader make_loader builds (rank 0 of 1), over any shard locations."""
    steps = max(1, info.counts["train"] // cfg.batch_size)
    transform = build_transform(cfg.image_size, True, scale=cfg.crop_scale, hflip=cfg.hflip)
    stream = ShardStream(
        shards,
        rank=0,
        world=1,
        workers=cfg.num_workers,
        train=True,
        batch_size=cfg.batch_size,
        steps=steps,
        seed=cfg.seed,
        epoch=0,
        shuffle_buffer=cfg.shuffle_buffer,
        decode=ImageDecoder(transform),
        collate=uint8_collate,
    )
    return Loader(stream, cfg, steps, train=True, return_keys=False)


def img_per_s(make: Callable[[], Loader], epochs: int) -> float:
    """Images per wall second over ``epochs`` fresh loaders (worker start-up included, as in training)."""
    images, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _ in make():
            images += len(x)
    return images / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist:500", help="built-in NAME[:IMAGES_PER_CLASS]")
    ap.add_argument("--max-count", type=int, default=500, help="samples per shard")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    name, _, limit = args.dataset.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        src = fetch_dataset(name, Path(tmp) / "src", limit_per_class=int(limit) if limit else None)
        cfg = ShardConfig(resize_shorter=None, image_format="png", max_count=args.max_count, progress=False)
        vdir = Path(shard_dataset(src, Path(tmp) / "shards", cfg).version_dir)
        info = DatasetInfo.load(vdir)
        proc, endpoint = start_moto(Path(tmp) / "moto.log")
        try:
            use_endpoint(endpoint)
            upload_dir(vdir, f"s3://{BUCKET}/{vdir.name}")
            sources = {"local disk": str(vdir), "S3 (moto, loopback)": f"s3://{BUCKET}/{vdir.name}"}
            shards = {
                k: [(f"{base}/{Path(p).name}", n) for p, n in info.shard_entries("train")]
                for k, base in sources.items()
            }
            best: dict[tuple[str, int], float] = {}
            for repeat in range(args.repeats):  # interleaved, order alternating, best kept: the machine is shared
                for workers in args.workers:
                    lcfg = LoaderConfig(
                        batch_size=args.batch, image_size=args.image_size, num_workers=workers, crop_scale=(0.6, 1.0)
                    )
                    for source in list(sources)[:: 1 if repeat % 2 == 0 else -1]:
                        rate = img_per_s(lambda s=source, c=lcfg: training_loader(shards[s], info, c), args.epochs)
                        best[source, workers] = max(rate, best.get((source, workers), 0.0))
        finally:
            proc.kill()
            proc.wait()
    print(
        f"# {date.today()} {platform.node()} {os.cpu_count()} CPUs, torch {torch.__version__}, pyarrow "
        f"{pyarrow.__version__}; {args.dataset}: {info.counts['train']} train images in {len(info.shards['train'])} "
        f"shards, batch {args.batch}, {args.image_size} px, {args.epochs} epochs, best of {args.repeats}"
    )
    print(f"| {'source':<22} | {'loader workers':>14} | {'img/s':>7} | {'vs local':>8} |")
    print(f"|{'-' * 24}|{'-' * 16}|{'-' * 9}|{'-' * 10}|")
    for workers in args.workers:
        local = best["local disk", workers]
        for source in sources:
            rate = best[source, workers]
            print(f"| {source:<22} | {workers:>14} | {rate:>7.0f} | {rate / local:>7.2f}x |")


if __name__ == "__main__":
    main()
