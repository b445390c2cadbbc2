"""Checkpoint layout: ``checkpoint.pt`` (all state, torch) + ``meta.json`` (small, human/tool readable).

``meta.json`` lets the launcher, the artifact store and ``evaluate`` read the epoch, metrics and model recipe
without unpickling tensors (and without downloading them when the checkpoint lives on S3).
A checkpoint or run directory may be a local path or any ``pyarrow.fs`` URI (``s3://bucket/prefix/ray/<run>``):
``locate_checkpoint`` picks one by its meta files alone, ``fetch_checkpoint`` downloads only that one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from torch import nn

from senet_dist.models import create_model
from senet_dist.storage import is_local, join, local_dir, read_bytes, redact, resolve_filesystem

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
    return max(found, key=lambda d: _rank(read_meta(d)))


def _rank(meta: dict[str, Any]) -> tuple[float, int]:
    """How a run dir's checkpoints compare: the run's ranking metric, then the epoch (missing metric: last)."""
    value = meta.get("metrics", {}).get(meta.get("keep_best_by", "val_acc"))
    return float(-1.0 if value is None else value), int(meta.get("epoch", 0))


def locate_checkpoint(location: str | Path) -> str:
    """``resolve_checkpoint`` for a local path or a URI, returned in the location's own form.

    Remote: a checkpoint URI as is; a run-dir URI -> its ``checkpoint_*`` entries are listed through pyarrow.fs and
    only their meta.json files are read (no weights are downloaded to choose). Storage errors (missing bucket,
    wrong credentials) pass through as ``OSError``: they may be transient, unlike a location holding no checkpoint.
    """
    loc = str(location)
    if is_local(loc):
        return str(resolve_checkpoint(loc.removeprefix("file://")))
    fs, root = resolve_filesystem(loc)
    if fs.get_file_info(f"{root}/{META_FILE}").type == pafs.FileType.File:
        return loc
    entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(
        e.base_name for e in entries if e.type == pafs.FileType.Directory and e.base_name.startswith("checkpoint_")
    )
    metas = fs.get_file_info([f"{root}/{name}/{META_FILE}" for name in names])
    kept = [name for name, info in zip(names, metas, strict=True) if info.type == pafs.FileType.File]
    if not kept:
        raise CheckpointError(f"{redact(loc)} is neither a senet-dist checkpoint nor a run directory holding one")
    ranks = {name: _rank(json.loads(read_bytes(join(loc, name, META_FILE)))) for name in kept}
    return join(loc, max(kept, key=ranks.__getitem__))


def fetch_checkpoint(location: str | Path, scratch: str | Path) -> Path:
    """The checkpoint ``location`` names (see ``locate_checkpoint``) as a directory on this machine: a local one as
    it is, a remote one downloaded into ``scratch`` (only that checkpoint, never the whole run)."""
    return local_dir(locate_checkpoint(location), scratch)
