"""Synthetic ImageFolder trees written with PIL (real files, tiny images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, mode: str = "RGB", fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def make_tree(root: Path, classes: dict[str, int], size: tuple[int, int] = (40, 30), ext: str = ".jpg") -> Path:
    """``classes``: class folder name -> number of images."""
    seed = 0
    for name, n in classes.items():
        for i in range(n):
            write_image(root / name / f"img {i:03d}{ext}", size, seed)
            seed += 1
    return root


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", {"cats": 12, "dogs ü": 10})
