"""``export_model``: a checkpoint (or a run, by id or directory) -> a TorchScript or ONNX model plus ``model.json``,
verified before anything is written.

Steps: resolve the checkpoint (download it when remote); load a batch of REAL test images from the dataset version
the model was trained on (``--data``, else the ``datasets`` table's record of that version); export into a private
temporary directory; load the exported file back (TorchScript via ``torch.jit.load``, ONNX via onnxruntime) and
compare it with the PyTorch model on that batch (the whole batch, and a batch of one, which checks the dynamic batch
dimension): every top-1 label must agree and every logit must be within ``atol`` (1e-4). Only then is the directory
published: locally by one ``rename`` of the finished directory, on object storage by uploading the model file first
and ``model.json`` last. A failed verification raises :class:`VerificationError` saying what differed; the target is
untouched.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.release.metadata import CARD_FILE, FORMATS, INPUT_NAME, OUTPUT_NAME, ModelCard, Preprocess, check_format
from senet_dist.release.runtime import ONNX_EXTRA, card_from_checkpoint, load_file
from senet_dist.storage import download_dir, is_local, is_uri, join, list_files, read_bytes, write_bytes
from senet_dist.train.checkpoint import META_FILE, CheckpointError, model_from_checkpoint, resolve_checkpoint

log = logging.getLogger(__name__)

DEFAULT_IMAGES = 32
DEFAULT_ATOL = 1e-4


class ExportError(ValueError):
    """The export cannot be made: an unknown source, no data to verify with, an occupied target, a missing extra."""


class VerificationError(RuntimeError):
    """The exported model disagrees with the PyTorch model; nothing was written."""


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


@dataclass
class ExportResult:
    uri: str
    card: ModelCard
    verification: Verification
    files: list[str] = field(default_factory=list)


@dataclass
class _Source:
    checkpoint: Path  # local checkpoint directory
    uri: str  # where it lives (as given or as recorded)
    run_id: str | None
    meta: dict[str, Any]


def export_model(
    source: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    store: ArtifactStore | None = None,
    data: str | os.PathLike[str] | None = None,
    num_images: int = DEFAULT_IMAGES,
    atol: float = DEFAULT_ATOL,
    model_id: str | None = None,
) -> ExportResult:
    """Export ``source`` (a checkpoint or run directory or URI, or a run / model id in ``store``) as ``fmt`` into
    ``out`` (a new or empty directory, or a URI prefix), verified on up to ``num_images`` real test images.

    With a ``store``, a registered model (id ``model_id``, default: the run id) gets the export URI recorded."""
    check_format(fmt)
    if fmt == "onnx":
        _require_onnx()
    out = str(out)
    _check_target(out)
    with tempfile.TemporaryDirectory(prefix="senet-export-") as tmp:
        src = _resolve_source(str(source), store, Path(tmp) / "checkpoint")
        version_dir = _version_dir(src, data, store)
        pre = Preprocess.from_checkpoint_meta(src.meta)
        images, info, split = real_test_images(version_dir, pre, num_images, src.meta["classes"])
        model, meta = model_from_checkpoint(src.checkpoint, map_location="cpu")  # the weights evaluation scores
        model.eval()
        build = Path(tmp) / "build"
        build.mkdir()
        card = card_from_checkpoint(meta, src.uri)
        card.format, card.file = fmt, FORMATS[fmt]
        _EXPORTERS[fmt](model, _example(images), build / card.file)
        runner = load_file(fmt, build / card.file, card, torch.device("cpu"))
        verification = verify(model, runner, images, atol=atol, dataset_version=info.version, split=split)
        if not verification.passed:
            raise VerificationError(
                f"exported {fmt} model disagrees with the PyTorch model on {verification.images} real {split} "
                f"images of {info.version}: top-1 differs on {verification.top1_mismatches}, max |logit difference| "
                f"{verification.max_abs_diff:.3g} (allowed {atol:g}); nothing was written to {out}"
            )
        registered = _registered(store, model_id or src.run_id)
        card.model_id = registered.model_id if registered else model_id
        card.run_id = src.run_id
        card.dataset = {
            "name": registered.dataset if registered else None,
            "version": src.meta.get("dataset_version"),
            "fingerprint": src.meta.get("dataset_fingerprint"),
        }
        card.test_metrics = _test_metrics(store, src, version_dir, info.version, split)
        card.exported_at = utcnow().isoformat()
        card.verification = verification.to_dict()
        card.versions = _versions(fmt)
        (build / CARD_FILE).write_text(card.to_json())
        files = sorted(p.name for p in build.iterdir())
        uri = _publish(build, out)
    if registered is not None and store is not None:
        from senet_dist.release.registry import record_export

        record_export(store, registered.model_id, uri)
    log.info("exported %s as %s to %s (max |diff| %.2g)", src.uri, fmt, uri, verification.max_abs_diff)
    return ExportResult(uri=uri, card=card, verification=verification, files=files)


def existing_export(location: str) -> ModelCard | None:
    """The card of a complete export at ``location``, or None."""
    try:
        return ModelCard.from_json(read_bytes(join(location, CARD_FILE)))
    except (FileNotFoundError, OSError):
        return None


# ---- the source checkpoint and the data it is verified on ----------------------------------------------
def _resolve_source(source: str, store: ArtifactStore | None, scratch: Path) -> _Source:
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


def _remote(uri: str, scratch: Path, run_id: str | None) -> _Source:
    try:
        read_bytes(join(uri, META_FILE))
    except (FileNotFoundError, OSError):
        raise ExportError(f"{uri} is not a senet-dist checkpoint (no {META_FILE})") from None
    download_dir(uri, scratch)
    return _source(scratch, uri, run_id)


def _source(ckpt: Path, uri: str, run_id: str | None) -> _Source:
    from senet_dist.train.checkpoint import read_meta

    meta = read_meta(ckpt)
    return _Source(checkpoint=ckpt, uri=uri, run_id=run_id or meta.get("run_name"), meta=meta)


def _version_dir(src: _Source, data: str | os.PathLike[str] | None, store: ArtifactStore | None) -> Path:
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
        return Path(row["uri"])
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


def _example(images: torch.Tensor) -> torch.Tensor:
    """Two images: a batch of one would let tracing / torch.export specialise the batch dimension to 1."""
    return images[:2] if len(images) >= 2 else images.repeat(2, 1, 1, 1)[:2]


# ---- exporters ------------------------------------------------------------------------------------------
def _torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notices
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def _onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            external_data=False,  # one self-contained file (fine below protobuf's 2 GB limit)
            dynamic_shapes=({0: batch},),
            verbose=False,
        )


_EXPORTERS = {"torchscript": _torchscript, "onnx": _onnx}


def _require_onnx() -> None:
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            raise ExportError(ONNX_EXTRA) from None


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


# ---- metadata -------------------------------------------------------------------------------------------
def _registered(store: ArtifactStore | None, model_id: str | None) -> Any:
    if store is None or not model_id:
        return None
    from senet_dist.release.registry import find

    return find(store, model_id)


def _test_metrics(
    store: ArtifactStore | None, src: _Source, version_dir: Path, version: str, split: str
) -> dict[str, Any]:
    """The recorded evaluation of the run on ``version``'s ``split``, else a fresh evaluation of the checkpoint."""
    from senet_dist.release.registry import latest_evaluation, metrics_from_evaluation

    if store is not None and src.run_id:
        row = latest_evaluation(store, src.run_id, version, split)
        if row is not None:
            return metrics_from_evaluation(row)
    from senet_dist.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(src.checkpoint, version_dir, split=split, device="cpu")
    return metrics_from_evaluation({**report.to_dict(), "split": split})


def _versions(fmt: str) -> dict[str, str]:
    names = ["senet-dist", "torch"] + (["onnx", "onnxruntime", "onnxscript"] if fmt == "onnx" else [])
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


# ---- publishing -----------------------------------------------------------------------------------------
def _check_target(out: str) -> None:
    """The target must be new or empty: an export is never mixed into (or over) another one."""
    if is_local(out):
        target = Path(out.removeprefix("file://")).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ExportError(f"{out} already exists and is not an empty directory; choose another --out")
        return
    if list_files(out):
        raise ExportError(f"{out} already holds objects; choose another --out")


def _publish(build: Path, out: str) -> str:
    _check_target(out)
    if is_local(out):
        target = Path(out.removeprefix("file://")).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(build, staging)
        try:
            if target.is_dir():
                target.rmdir()  # empty (checked); rename needs it gone
            os.rename(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ExportError(f"cannot publish the export to {target}: {exc}") from exc
        return str(target)
    for f in sorted(build.iterdir(), key=lambda p: p.name == CARD_FILE):  # model.json last: it marks completion
        write_bytes(join(out, f.name), f.read_bytes())
    return out
