"""Stratified, seeded train/val/test assignment.

Each file is ranked inside its class by ``sha256(seed, path)``, so the split is deterministic, needs no decoding,
and adding one file moves at most a boundary sample instead of reshuffling the whole dataset.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass

from .source import SPLITS, DatasetError, SourceFile


@dataclass(frozen=True)
class SplitConfig:
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
            raise DatasetError(f"split fractions must be three non-negative numbers, got {self.fractions}")
        if not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6):
            raise DatasetError(f"split fractions must sum to 1, got {self.fractions} (sum {sum(self.fractions)})")
        if self.fractions[0] <= 0:
            raise DatasetError("the train fraction must be > 0")


def _rank(seed: int, rel: str) -> str:
    return hashlib.sha256(f"{seed}\0{rel}".encode()).hexdigest()


def _sizes(n: int, fractions: tuple[float, ...], class_name: str, names: tuple[str, ...]) -> list[int]:
    """Per-split counts for one class: every split with a positive fraction gets >= 1 sample."""
    tail = [max(1, round(n * f)) if f > 0 else 0 for f in fractions[1:]]
    sizes = [n - sum(tail), *tail]
    if sizes[0] < 1:
        needed = 1 + sum(1 for f in fractions[1:] if f > 0)
        raise DatasetError(
            f"class {class_name!r} has {n} image(s); splitting into {'/'.join(names)} with fractions "
            f"{fractions} needs at least {needed}"
        )
    return sizes


def _stratify(
    files: list[SourceFile], fractions: tuple[float, ...], names: tuple[str, ...], seed: int
) -> dict[str, str]:
    by_class: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        by_class[f.class_name].append(f)
    assigned: dict[str, str] = {}
    for class_name, members in sorted(by_class.items()):
        members.sort(key=lambda f: _rank(seed, f.rel))
        start = 0
        for name, size in zip(names, _sizes(len(members), fractions, class_name, names), strict=True):
            for f in members[start : start + size]:
                assigned[f.rel] = name
            start += size
    return assigned


def assign_splits(files: list[SourceFile], cfg: SplitConfig, mode: str) -> dict[str, str]:
    """Map each file's relative path to "train", "val" or "test"."""
    if mode == "random":
        return _stratify(files, cfg.fractions, SPLITS, cfg.seed)
    assigned = {f.rel: f.fixed_split for f in files if f.fixed_split in ("val", "test")}
    train = [f for f in files if f.fixed_split == "train"]
    has_val_dir = any(f.fixed_split == "val" for f in files)
    train_frac, val_frac, _ = cfg.fractions
    if has_val_dir or val_frac == 0:
        assigned.update({f.rel: "train" for f in train})
    else:  # carve val out of the official train split, keeping train:val at the configured ratio
        val_share = val_frac / (train_frac + val_frac)
        assigned.update(_stratify(train, (1 - val_share, val_share), ("train", "val"), cfg.seed))
    return assigned
