"""benchmarks/gpu.py must run on a CPU-only machine (smoke check of the worker's step path, no Ray)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_gpu_benchmark_cpu_smoke() -> None:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu.py"),
        "--device",
        "cpu",
        "--steps",
        "2",
        "--models",
        "se_resnet_tiny",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--no-timm",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=110, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| se_resnet_tiny"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "fp32" and cells[5] == "False"  # CPU: precision auto -> fp32, channels_last auto -> off
    assert float(cells[7].replace(",", "")) > 0
