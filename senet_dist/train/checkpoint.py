"""Checkpoint layout: ``checkpoint.pt`` (all state, torch) + ``meta.json`` (small, human/tool readable).

``meta.json`` lets the launcher, the artifact store and ``evaluate`` read the epoch, metrics and model recipe
without unpickling tensors (and without downloading them when the checkpoint lives on S3).
A checkpoint or run directory may be a local path or any ``pyarrow.fs`` URI (``s3://bucket/prefix/ray/<run>``):
``locate_checkpoint`` picks one by its meta files alone, ``fetch_checkpoint`` downloads only that one.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from torch import nn

from senet_dist.errors import PermanentError
from senet_dist.models import create_model
from senet_dist.storage import is_local, join, local_dir, read_bytes, redact, resolve_filesystem

CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"


class CheckpointError(PermanentError, ValueError):
    """The directory is not a usable senet-dist checkpoint: missing files, a torn or corrupt file, or a file that
    would need code to load (refused: see :func:`load_state`)."""


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
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} holds a {type(meta).__name__}, not a checkpoint's metadata object")
    return meta


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a senet-dist checkpoint (no {CHECKPOINT_FILE})")
    return load_state(path, map_location)


_BLOCKED_GLOBAL = re.compile(r"GLOBAL (\S+)")


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A ``torch.save`` file loaded as data only (``weights_only=True``): tensors, numbers, strings, lists, dicts.

    A checkpoint is a file someone downloaded or uploaded to the bucket; an unrestricted unpickle would run whatever
    code its pickle names. senet-dist writes only tensors and plain values (the config and history as JSON-safe
    data), so anything that needs more (a pickled object, a TorchScript archive) is refused with one line."""
    path = Path(path)
    if _is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript archive (code), not a checkpoint of weights: refused")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _BLOCKED_GLOBAL.search(str(exc))
        needs = f" (it names {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} needs code to load{needs}: refused; a senet-dist checkpoint holds only tensors and plain values"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (torn or corrupt: {_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint's state dict")
    return state


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a ``code/`` folder (``torch.load`` would hand them to ``torch.jit.load``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.split("/")[1:2] == ["code"] for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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
    try:
        model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_kwargs", {}))
        model.load_state_dict(state["ema"]["model"] if chosen == "ema" else state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:  # a meta.json / state that do not fit together
        raise CheckpointError(f"{directory} does not hold a loadable model: {_first_line(exc)}") from None
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
