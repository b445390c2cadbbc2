"""Checkpoints: ``checkpoint.pt`` (every tensor of the training state) + ``meta.json`` (:class:`CheckpointMeta`).

``meta.json`` is the one typed description of a checkpoint, written and read only here: the model recipe (name,
kwargs, classes), the evaluation view (:class:`~senet_dist.data.preprocess.Preprocess`), the data it was trained on,
the epoch and metrics, and the sha256 of ``checkpoint.pt``. The launcher, the tables, evaluation and release read it
without unpickling tensors (and without downloading them when the checkpoint lives on S3).

A checkpoint or run directory may be a local path or any ``pyarrow.fs`` URI (``s3://bucket/prefix/ray/<run>``):
:func:`locate_checkpoint` picks one by its meta files alone; :func:`load_model` is the one way to get a model out
of any such location (only the chosen checkpoint is downloaded). Loading is data only (:func:`load_state`).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from senet_dist.data.preprocess import Preprocess
from senet_dist.errors import PermanentError
from senet_dist.models import create_model
from senet_dist.storage import is_local, join, local_dir, read_bytes, redact, resolve_filesystem
from senet_dist.train.results import EpochMetrics

CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"
WEIGHTS = ("auto", "model", "ema")
META_VERSION = 2  # 1: the untyped dict of earlier releases (still read)


class CheckpointError(PermanentError, ValueError):
    """The location is not a usable senet-dist checkpoint: missing files, a torn or corrupt file, a digest that does
    not match, or a file that would need code to load (refused: see :func:`load_state`)."""


class CheckpointMeta(BaseModel):
    """What ``meta.json`` says about a checkpoint. Older files (no ``preprocess``, no digest) read with defaults;
    keys this version does not know are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())

    model: str
    num_classes: int = Field(ge=1)
    classes: list[str]
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    image_size: int = Field(32, ge=1)
    preprocess: Preprocess | None = None  # None in version-1 files: derived from ``config`` (see ``eval_view``)
    run_name: str | None = None
    epoch: int = 0
    dataset_version: str | None = None
    dataset_fingerprint: str | None = None
    num_params: int | None = None
    metrics: EpochMetrics | None = None  # this epoch's, as every rank reported them
    keep_best_by: str = "val_acc"  # the metric keep-best ranks a run's checkpoints by
    better_weights: Literal["model", "ema"] = "model"  # which did better on val this epoch
    history: list[EpochMetrics] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)  # the run's TrainConfig, as saved in config.yaml
    weights_sha256: str | None = None  # of checkpoint.pt; None in version-1 files
    meta_version: int = META_VERSION

    @property
    def eval_view(self) -> Preprocess:
        """How the run's evaluation batches were made (the saved loader section for version-1 files)."""
        if self.preprocess is not None:
            return self.preprocess
        return Preprocess.from_loader(self.config.get("loader") or {}, self.image_size)

    @property
    def rank(self) -> tuple[float, int]:
        """How a run's checkpoints compare: the run's ranking metric, then the epoch (missing metric: last)."""
        value = getattr(self.metrics, self.keep_best_by, None) if self.metrics is not None else None
        return float(-1.0 if value is None else value), self.epoch

    @classmethod
    def from_json(cls, text: str | bytes, where: str = META_FILE) -> CheckpointMeta:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(top level)"
            why = f"{field}: {first['msg']}"
            raise CheckpointError(f"{where} is not a senet-dist checkpoint's metadata: {why}") from None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what its metadata says and which weights it holds."""

    model: nn.Module
    meta: CheckpointMeta
    weights: Literal["model", "ema"]  # the trained weights, or their moving average
    location: str  # the checkpoint, as given (a path or URI; redact it before showing it)


# ---- writing -------------------------------------------------------------------------------------------------
def save_checkpoint(directory: str | Path, state: dict[str, Any], meta: CheckpointMeta) -> Path:
    """Write ``state`` with ``torch.save``, then ``meta`` (with the weights file's digest) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(state, d / CHECKPOINT_FILE)
    digest = sha256_file(d / CHECKPOINT_FILE)
    (d / META_FILE).write_text(meta.model_copy(update={"weights_sha256": digest}).to_json())
    return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- reading -------------------------------------------------------------------------------------------------
def read_meta(directory: str | Path) -> CheckpointMeta:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a senet-dist checkpoint (no {META_FILE})")
    return CheckpointMeta.from_json(path.read_bytes(), str(path))


def read_meta_at(location: str) -> CheckpointMeta:
    """The metadata of a checkpoint at a local path or URI, without touching its weights."""
    return CheckpointMeta.from_json(read_bytes(join(location, META_FILE)), redact(join(location, META_FILE)))


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state of a local checkpoint directory, checked against the digest its metadata records."""
    d = Path(directory)
    path = d / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a senet-dist checkpoint (no {CHECKPOINT_FILE})")
    expected = read_meta(d).weights_sha256 if (d / META_FILE).is_file() else None
    if expected is not None and sha256_file(path) != expected:
        raise CheckpointError(f"{path} does not match the sha256 its {META_FILE} records (torn or replaced): refused")
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


def model_from_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu", weights: str = "auto"
) -> LoadedModel:
    """Rebuild the registered model of a LOCAL checkpoint directory with its saved kwargs and load its weights.

    ``weights``: ``model`` (the trained weights), ``ema`` (their moving average; an error if the run kept none) or
    ``auto``: whichever did better on val at that epoch (``meta.better_weights``; ``model`` without EMA)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    meta = read_meta(directory)
    state = load_checkpoint(directory, map_location)
    chosen: Literal["model", "ema"] = meta.better_weights if weights == "auto" else weights  # type: ignore[assignment]
    if chosen == "ema" and not state.get("ema"):
        raise CheckpointError(f"{directory} holds no EMA weights (the run had ema.enabled false)")
    try:
        model = create_model(meta.model, num_classes=meta.num_classes, **meta.model_kwargs)
        model.load_state_dict(state["ema"]["model"] if chosen == "ema" else state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:  # a meta.json / state that do not fit together
        raise CheckpointError(f"{directory} does not hold a loadable model: {_first_line(exc)}") from None
    return LoadedModel(model.eval(), meta, chosen, str(directory))


def load_model(location: str | Path, *, weights: str = "auto") -> LoadedModel:
    """The one load path: a checkpoint or run directory (its best checkpoint), local or a URI -> the model on the
    CPU, its metadata and which weights it holds. A remote checkpoint is downloaded into a temporary directory
    (only the chosen checkpoint, never the whole run) that is gone when this returns."""
    located = locate_checkpoint(location)
    if is_local(located):
        return model_from_checkpoint(located.removeprefix("file://"), weights=weights)
    with tempfile.TemporaryDirectory(prefix="senet-ckpt-") as tmp:
        loaded = model_from_checkpoint(local_dir(located, Path(tmp) / "checkpoint"), weights=weights)
    loaded.location = located
    return loaded


# ---- locating ------------------------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir as is; a run dir -> its kept checkpoint with the best ranking metric (the run's
    ``keep_best_by``, ``val_acc`` by default; ties: the later epoch)."""
    p = Path(path)
    if (p / META_FILE).is_file():
        return p
    found = [d for d in p.glob("checkpoint_*") if (d / META_FILE).is_file()] if p.is_dir() else []
    if not found:
        raise CheckpointError(f"{path} is neither a senet-dist checkpoint nor a run directory holding one")
    return max(found, key=lambda d: read_meta(d).rank)


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
    ranks = {name: read_meta_at(join(loc, name)).rank for name in kept}
    return join(loc, max(kept, key=ranks.__getitem__))


def checkpoint_digest(location: str) -> str:
    """The sha256 of a checkpoint's weights: recorded in its metadata, else (a version-1 checkpoint) computed."""
    recorded = read_meta_at(location).weights_sha256
    return recorded or hashlib.sha256(read_bytes(join(location, CHECKPOINT_FILE))).hexdigest()
