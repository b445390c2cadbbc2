"""What an export starts from: the source checkpoint (a directory, a URI, or a run / model id looked up in the
tables; downloaded when remote) and the real test images of the dataset version it was trained on, which the export
is verified with. Kept apart from :mod:`~senet_dist.release.export` because it is the part that knows the tables and
the dataset layout; the export itself only needs an :class:`ExportSource` and a batch of images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from senet_dist.artifacts import ArtifactStore
from senet_dist.release.errors import ExportError
from senet_dist.release.metadata import Preprocess
from senet_dist.storage import download_dir, is_local, is_uri, join, read_bytes
from senet_dist.train.checkpoint import META_FILE, CheckpointError, resolve_checkpoint


@dataclass
class ExportSource:
    checkpoint: Path  # local checkpoint directory
    uri: str  # where it lives (as given or as recorded)
    run_id: str | None
    meta: dict[str, Any]


def resolve_source(source: str, store: ArtifactStore | None, scratch: Path) -> ExportSource:
    """``source`` (a checkpoint or run directory, a checkpoint URI, or a run / model id in ``store``) as a local
    checkpoint; remote ones are downloaded into ``scratch``."""
    if not is_uri(source) and Path(source).exists():
        try:
            ckpt = resolve_checkpoint(source)
        except CheckpointError as exc:
            raise ExportError(str(exc)) from None
        return _source(ckpt, str(ckpt), None)
    if is_uri(source):
        return _remote(source, scratch, None)
    if store is None:
        raise ExportError(f"{source!r} is not a checkpoint or run directory (and no artifacts store to look up a run)")
    uri = _checkpoint_of(store, source)
    if uri is None:
        raise ExportError(
            f"{source!r} is neither a checkpoint or run directory nor a completed run or registered model in "
            f"{store.root}"
        )
    if is_local(uri):
        return _source(resolve_checkpoint(uri.removeprefix("file://")), uri, source)
    return _remote(uri, scratch, source)


def _checkpoint_of(store: ArtifactStore, run_or_model: str) -> str | None:
    from senet_dist.release.registry import find

    rec = find(store, run_or_model)
    if rec is not None and rec.checkpoint_uri:
        return rec.checkpoint_uri
    runs = [r for r in store.runs_latest().to_pylist() if r["run_id"] == run_or_model]
    if runs and runs[0]["status"] == "completed" and runs[0]["best_checkpoint_uri"]:
        return str(runs[0]["best_checkpoint_uri"])
    return None


def _remote(uri: str, scratch: Path, run_id: str | None) -> ExportSource:
    try:
        read_bytes(join(uri, META_FILE))
    except (FileNotFoundError, OSError):
        raise ExportError(f"{uri} is not a senet-dist checkpoint (no {META_FILE})") from None
    download_dir(uri, scratch)
    return _source(scratch, uri, run_id)


def _source(ckpt: Path, uri: str, run_id: str | None) -> ExportSource:
    from senet_dist.train.checkpoint import read_meta

    meta = read_meta(ckpt)
    return ExportSource(checkpoint=ckpt, uri=uri, run_id=run_id or meta.get("run_name"), meta=meta)


def version_dir(src: ExportSource, data: str | os.PathLike[str] | None, store: ArtifactStore | None) -> str:
    """The dataset version directory to verify on: ``data`` when given, else the ``datasets`` table's record of the
    version the checkpoint was trained on."""
    from senet_dist.data import resolve_version
    from senet_dist.data.source import DatasetError

    if data is not None:
        try:
            return resolve_version(data)
        except DatasetError as exc:
            raise ExportError(str(exc)) from None
    version = src.meta.get("dataset_version")
    row = store.latest("datasets", "version", version) if store is not None and version else None
    if row is not None and row.get("uri") and is_local(row["uri"]) and Path(row["uri"]).is_dir():
        return str(row["uri"])
    raise ExportError(
        f"cannot find dataset version {version!r} of {src.uri} to verify the export on its test images; "
        "pass --data SHARDS_ROOT_OR_VERSION_DIR"
    )


def real_test_images(
    version_dir: str | os.PathLike[str], pre: Preprocess, n: int, classes: list[str] | None = None
) -> tuple[torch.Tensor, Any, str]:
    """``(images, info, split)``: up to ``n`` images of the version's report split (``test``; ``val`` for versions
    sharded without a test split), prepared as the evaluation loader prepares them."""
    from senet_dist.data import DatasetInfo, make_loader
    from senet_dist.evaluate import report_split

    info = DatasetInfo.load(version_dir)
    if classes is not None and list(info.classes) != list(classes):
        raise ExportError(f"model classes {list(classes)} differ from {info.version}'s classes {list(info.classes)}")
    split = report_split(info.version_dir)
    if info.counts.get(split, 0) == 0:
        raise ExportError(f"dataset version {info.version} has no {split} images to verify the export with")
    batches, have = [], 0
    for images, _ in make_loader(version_dir, split, pre.loader_config(n), train=False):
        batches.append(images)
        have += len(images)
        if have >= n:
            break
    return torch.cat(batches)[:n].float(), info, split
