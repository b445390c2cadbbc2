"""Checkpoint layout: ``checkpoint.pt`` (all state, torch) + ``meta.json`` (small, human/tool readable).

``meta.json`` lets the launcher, the artifact store and ``evaluate`` read the epoch, metrics and model recipe
without unpickling tensors (and without downloading them when the checkpoint lives on S3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet_dist.models import create_model

CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"


class CheckpointError(ValueError):
    """The directory is not a senet-dist checkpoint."""


def save_checkpoint(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` with torch.save and ``meta`` as JSON into ``directory`` (created if missing)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(state, d / CHECKPOINT_FILE)
    (d / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return d


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a senet-dist checkpoint (no {META_FILE})")
    return json.loads(path.read_text())


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a senet-dist checkpoint (no {CHECKPOINT_FILE})")
    # weights_only=False: the state holds plain python config/history next to tensors; we wrote it ourselves.
    return torch.load(path, map_location=map_location, weights_only=False)


WEIGHTS = ("auto", "model", "ema")


def model_from_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu", weights: str = "auto"
) -> tuple[nn.Module, dict]:
    """Rebuild the registered model with its saved kwargs and load the weights; returns (model, meta).

    ``weights``: ``model`` (the trained weights), ``ema`` (their moving average; an error if the run kept none) or
    ``auto``: whichever did better on val at that epoch (``meta["better_weights"]``; ``model`` for checkpoints
    without EMA). The returned meta says which under ``"weights"``.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    meta = read_meta(directory)
    state = load_checkpoint(directory, map_location)
    chosen = meta.get("better_weights", "model") if weights == "auto" else weights
    if chosen == "ema" and not state.get("ema"):
        raise CheckpointError(f"{directory} holds no EMA weights (the run had ema.enabled false)")
    model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_kwargs", {}))
    model.load_state_dict(state["ema"]["model"] if chosen == "ema" else state["model"])
    return model, {**meta, "weights": chosen}


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir as is; a run dir -> its kept checkpoint with the best ranking metric (the run's
    ``keep_best_by``, ``val_acc`` by default; ties: the later epoch)."""
    p = Path(path)
    if (p / META_FILE).is_file():
        return p
    found = [d for d in p.glob("checkpoint_*") if (d / META_FILE).is_file()] if p.is_dir() else []
    if not found:
        raise CheckpointError(f"{path} is neither a senet-dist checkpoint nor a run directory holding one")

    def score(d: Path) -> tuple[float, int]:
        meta = read_meta(d)
        value = meta.get("metrics", {}).get(meta.get("keep_best_by", "val_acc"))
        return float(-1.0 if value is None else value), int(meta.get("epoch", 0))

    return max(found, key=score)
