"""Verification of an export against the PyTorch model it came from: the exported file, loaded back, must give the
same top-1 label on every image and every logit within ``atol``, on a batch and on a batch of one (which checks the
dynamic batch dimension). Separate from the writers so the check cannot depend on how the file was produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

DEFAULT_ATOL = 1e-4


@dataclass
class Verification:
    """How the exported model compared with the PyTorch model on real test images."""

    images: int
    dataset_version: str
    split: str
    batch_sizes: list[int]
    max_abs_diff: float
    top1_mismatches: int
    atol: float

    @property
    def passed(self) -> bool:
        return self.top1_mismatches == 0 and self.max_abs_diff <= self.atol

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


def verify(
    model: torch.nn.Module,
    runner: Any,
    images: torch.Tensor,
    *,
    atol: float = DEFAULT_ATOL,
    dataset_version: str = "",
    split: str = "test",
) -> Verification:
    """Compare ``runner`` (the exported model, loaded back) with ``model`` on ``images`` and on a batch of one."""
    with torch.inference_mode():
        ref = model(images).float()
    diffs, mismatches, sizes = [], 0, []
    for batch, expected in ((images, ref), (images[:1], ref[:1])):
        got = runner(batch)
        sizes.append(len(batch))
        if got.shape != expected.shape:
            return Verification(len(images), dataset_version, split, sizes, float("inf"), len(batch), atol)
        diff = (got - expected).abs().max().item()
        diffs.append(diff if diff == diff else float("inf"))  # NaN -> inf: never within tolerance
        mismatches += int((got.argmax(1) != expected.argmax(1)).sum())
    return Verification(len(images), dataset_version, split, sizes, max(diffs), mismatches, atol)
