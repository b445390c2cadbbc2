"""Reliability suite: the fault/input tally, this suite's lfw-subset slice, and its tiny training helpers.

The local Ray (``ray_up`` / ``ray_down``), the lfw-subset factories and plain helpers (``shard``, ``PYTHON``,
``REPO``) are shared by all tests: tests/conftest.py and tests/helpers.py.

Every test that injects a fault or feeds a bad input records it in ``FIGURES``; the totals are printed at the end of
the session and, when ``SENET_RELIABILITY_FIGURES`` names a file, written there as JSON (docs/reliability.md quotes
that file via ``benchmarks/reliability_report.py``, never by hand).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PYTHON

# Ray/Prefect defaults: tests/conftest.py. One BLAS/OpenMP thread per process here: these tests run several training
# processes and loader workers at once on a 2-core box.
os.environ.setdefault("OMP_NUM_THREADS", "1")

FIGURES_ENV = "SENET_RELIABILITY_FIGURES"


class Figures:
    """Session tally: faults injected, bad inputs tried, runs completed, table rows lost (by kind)."""

    def __init__(self) -> None:
        self.faults: Counter[str] = Counter()
        self.bad_inputs: Counter[str] = Counter()
        self.runs_completed = 0
        self.rows_checked = 0
        self.rows_lost = 0

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults[kind] += n

    def bad_input(self, kind: str, n: int = 1) -> None:
        self.bad_inputs[kind] += n

    def run_completed(self, n: int = 1) -> None:
        self.runs_completed += n

    def rows(self, expected: int, found: int) -> None:
        """Account a table check: ``expected`` rows should exist, ``found`` do (lost = the shortfall)."""
        self.rows_checked += expected
        self.rows_lost += max(0, expected - found)

    def to_dict(self) -> dict[str, Any]:
        return {
            "faults_injected": sum(self.faults.values()),
            "bad_inputs_tried": sum(self.bad_inputs.values()),
            "runs_completed": self.runs_completed,
            "rows_checked": self.rows_checked,
            "rows_lost": self.rows_lost,
            "faults_by_kind": dict(sorted(self.faults.items())),
            "bad_inputs_by_kind": dict(sorted(self.bad_inputs.items())),
        }

    def empty(self) -> bool:
        return not (self.faults or self.bad_inputs or self.runs_completed or self.rows_checked)


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if FIGURES.empty():
        return
    data = FIGURES.to_dict()
    terminalreporter.section("reliability figures")
    for key in ("faults_injected", "bad_inputs_tried", "runs_completed", "rows_checked", "rows_lost"):
        terminalreporter.write_line(f"{key:>18}: {data[key]}")
    terminalreporter.write_line(f"{'faults by kind':>18}: {data['faults_by_kind']}")
    terminalreporter.write_line(f"{'bad inputs by kind':>18}: {data['bad_inputs_by_kind']}")
    out = os.environ.get(FIGURES_ENV)
    if out:
        Path(out).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---- data: this suite's lfw-subset slice (the factories are in tests/conftest.py) -------------------
@pytest.fixture(scope="session")
def lfw_source(lfw_source_factory) -> Path:
    """scikit-image's LFW subset, 40 images per class (real 25x25 faces / non-faces)."""
    return lfw_source_factory(40)


@pytest.fixture(scope="session")
def lfw_version(lfw_shards_factory) -> Path:
    """80 LFW images as shards of <= 20 samples (train 64 -> 4 shards, val 8, test 8)."""
    return lfw_shards_factory(40)


def tiny_train(**overrides: Any) -> dict[str, Any]:
    """TrainConfig overrides for a light 2-worker CPU run of se_resnet_tiny."""
    return {
        "model": "se_resnet_tiny",
        "epochs": 1,
        "batch_size": 8,
        "num_workers": 2,
        "loader_workers": 0,
        "image_size": 32,
        "optimizer.lr": 0.05,
        "seed": 0,
        "max_failures": 0,
    } | overrides


def train_config(**overrides: Any):
    from senet_dist.train import TrainConfig

    return TrainConfig().with_overrides(tiny_train(**overrides))


_EVAL_KEYS = textwrap.dedent("""
    import json, sys
    from senet_dist.data import LoaderConfig, make_loader
    vdir, split, world, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    keys = []
    try:
        for rank in range(world):
            cfg = LoaderConfig(batch_size=4, image_size=32, num_workers=workers)
            for _, _, ks in make_loader(vdir, split, cfg, rank=rank, world_size=world, return_keys=True):
                keys += ks
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"keys": keys}))
""")


def eval_keys(vdir: Path, split: str, world: int, workers: int, prelude: str = "") -> dict[str, Any]:
    """Every rank's eval keys (or the error) from a *fresh* process.

    Loaders with worker processes fork the caller; a pytest process that already ran Prefect flows in-process (tests/
    flows) forks broken workers (see docs/reliability.md), so loader checks with workers > 0 run in a clean child.
    ``prelude`` is Python run first in that child (to reproduce exactly that state).
    """
    proc = subprocess.run(
        [PYTHON, "-c", prelude + _EVAL_KEYS, str(vdir), split, str(world), str(workers)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the ``senet-dist`` console script as a user would: a fresh process, no PREFECT_API_URL."""
    exe = Path(PYTHON).with_name("senet-dist")
    full_env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    full_env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )
