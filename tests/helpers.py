"""Plain helpers shared by the test packages (fixtures live in tests/conftest.py).

Import them as ``from tests.helpers import free_port, wait_until, ...``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from senet_dist.train.results import EpochMetrics

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

T = TypeVar("T")


# ---- ports and waiting -----------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server to start on, or to find closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    proc: subprocess.Popen | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    Raises ``TimeoutError`` after ``timeout`` s, or ``RuntimeError`` as soon as ``proc`` (the process that should make
    the predicate true) has exited; both messages name ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode} first")
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout:g}s")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 2xx; False when it refuses, times out or answers an error status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except OSError:  # URLError, HTTPError, ConnectionRefusedError, timeouts
        return False


def wait_until_healthy(
    url: str, timeout: float, what: str, *, interval: float = 0.1, proc: subprocess.Popen | None = None
) -> None:
    """Wait until GET ``url`` answers 2xx (see ``wait_until``; ``proc`` is the server process)."""
    wait_until(lambda: http_ok(url), timeout, f"{what} healthy at {url}", interval=interval, proc=proc)


# ---- data ------------------------------------------------------------------------------------------
TINY_SHARD = {"resize_shorter": None, "image_format": "png", "progress": False, "num_procs": 1, "max_count": 20}


def shard(src: Path, out: Path, **overrides: Any) -> Path:
    """Shard ``src`` into ``out`` with tiny-test settings (``TINY_SHARD`` | ``overrides``); returns the version dir."""
    from senet_dist.data import ShardConfig, shard_dataset

    return Path(shard_dataset(src, out, ShardConfig(**(TINY_SHARD | overrides))).version_dir)


# ---- synthetic images (real files written with PIL) ------------------------------------------------
def write_image(
    path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, mode: str = "RGB", fmt: str | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def make_tree(root: Path, classes: dict[str, int], size: tuple[int, int] = (40, 30), ext: str = ".jpg") -> Path:
    """An ImageFolder tree; ``classes``: class folder name -> number of images."""
    seed = 0
    for name, n in classes.items():
        for i in range(n):
            write_image(root / name / f"img {i:03d}{ext}", size, seed)
            seed += 1
    return root


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL (a server or worker that ignores SIGTERM)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def epoch_metrics(**fields: Any) -> EpochMetrics:
    """One epoch's metrics with plausible values; a test sets the fields it looks at."""
    base: dict[str, Any] = dict(
        epoch=1,
        train_loss=1.0,
        train_acc=0.5,
        val_loss=1.0,
        val_acc=0.5,
        best_val_acc=0.5,
        lr=0.1,
        img_per_s=100.0,
        train_seconds=1.0,
        epoch_seconds=1.2,
        steps=3,
        world_size=2,
        resumed_from_epoch=0,
        stopped_early=False,
    )
    return EpochMetrics(**(base | fields))
