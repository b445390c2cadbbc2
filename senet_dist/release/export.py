"""``export_model``: a checkpoint (or a run, by id or directory) -> a TorchScript or ONNX model plus ``model.json``,
verified before anything is written.

Steps: resolve the source checkpoint (a directory, a URI, or a run / model id looked up in the tables) and load it
(``load_model``: only that checkpoint is downloaded); load a batch of REAL test images from the dataset version the
model was trained on (``--data``, else the ``datasets`` table's record of that version); export into a private
temporary directory; load the exported file back (TorchScript via ``torch.jit.load``, ONNX via onnxruntime) and
compare it with the PyTorch model on that batch (the whole batch, and a batch of one, which checks the dynamic batch
dimension): every top-1 label must agree and every logit must be within ``atol`` (1e-4). Only then is the directory
published: locally by one ``rename`` of the finished directory, on object storage by uploading the model file first
and ``model.json`` last (it marks completion). A failed verification raises :class:`VerificationError` saying what
differed; the target is untouched. ``model.json`` records the model file's sha256, and so does the registry.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.data.preprocess import Preprocess
from senet_dist.errors import PermanentError
from senet_dist.release.runtime import (
    CARD_FILE,
    FORMATS,
    INPUT_NAME,
    ONNX_EXTRA,
    OUTPUT_NAME,
    ModelCard,
    ModelFileError,
    card_from_checkpoint,
    check_format,
    load_file,
    sha256_bytes,
)
from senet_dist.storage import is_local, is_uri, join, list_files, read_bytes, redact, write_bytes
from senet_dist.train.checkpoint import CheckpointError, LoadedModel, load_model

log = logging.getLogger(__name__)

DEFAULT_IMAGES = 32
DEFAULT_ATOL = 1e-4


class ExportError(PermanentError, ValueError):
    """The export cannot be made: an unknown source, no data to verify with, an occupied target, a missing extra."""


class VerificationError(PermanentError, RuntimeError):
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
class ExportSource:
    """The checkpoint an export starts from, loaded, and where it lives (as given or as the tables record it)."""

    loaded: LoadedModel
    uri: str
    run_id: str | None


# ---- the export -----------------------------------------------------------------------------------------------
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
    from senet_dist.release.registry import find, record_export, test_metrics

    check_format(fmt)
    if fmt == "onnx":
        require_onnx()
    out = str(out)
    check_target(out)
    src = resolve_source(str(source), store)
    meta = src.loaded.meta
    vdir = version_dir(src, data, store)
    images, version, split = real_test_images(vdir, meta.eval_view, num_images, meta.classes)
    model = src.loaded.model.eval()  # the weights evaluation scores
    with tempfile.TemporaryDirectory(prefix="senet-export-") as tmp:
        build = Path(tmp) / "build"
        build.mkdir()
        card = card_from_checkpoint(meta, src.uri, src.loaded.weights)
        card.format, card.file = fmt, FORMATS[fmt]
        EXPORTERS[fmt](model, example_input(images), build / card.file)
        runner = load_file(fmt, build / card.file, card, torch.device("cpu"))
        verification = verify(model, runner, images, atol=atol, dataset_version=version, split=split)
        if not verification.passed:
            raise VerificationError(
                f"exported {fmt} model disagrees with the PyTorch model on {verification.images} real {split} "
                f"images of {version}: top-1 differs on {verification.top1_mismatches}, max |logit difference| "
                f"{verification.max_abs_diff:.3g} (allowed {atol:g}); nothing was written to {redact(out)}"
            )
        registered = find(store, model_id or src.run_id or "") if store is not None else None
        card.model_id = registered.model_id if registered else model_id
        card.run_id = src.run_id
        card.dataset = {
            "name": registered.dataset if registered else None,
            "version": meta.dataset_version,
            "fingerprint": meta.dataset_fingerprint,
        }
        card.test_metrics, _ = test_metrics(
            store, vdir, run_id=src.run_id, loaded=src.loaded, record=False, device="cpu"
        )
        card.sha256 = sha256_bytes((build / card.file).read_bytes())
        card.exported_at = utcnow().isoformat()
        card.verification = verification.to_dict()
        card.versions = _versions(fmt)
        (build / CARD_FILE).write_text(card.to_json())
        files = sorted(p.name for p in build.iterdir())
        uri = publish(build, out)
    if registered is not None and store is not None:
        record_export(store, registered.model_id, uri, card.sha256)
    log.info("exported %s as %s to %s (max |diff| %.2g)", redact(src.uri), fmt, redact(uri), verification.max_abs_diff)
    return ExportResult(uri=uri, card=card, verification=verification, files=files)


def existing_export(location: str) -> ModelCard | None:
    """The card of a complete export at ``location``, or None."""
    try:
        return ModelCard.from_json(read_bytes(join(location, CARD_FILE)))
    except (FileNotFoundError, ModelFileError):
        return None


def _versions(fmt: str) -> dict[str, str]:
    names = ["senet-dist", "torch"] + (["onnx", "onnxruntime", "onnxscript"] if fmt == "onnx" else [])
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


# ---- what an export starts from -----------------------------------------------------------------------------
def resolve_source(source: str, store: ArtifactStore | None) -> ExportSource:
    """``source`` (a checkpoint or run directory, a checkpoint URI, or a run / model id in ``store``), loaded."""
    if is_uri(source) or Path(source).exists():
        return _loaded(source, None)
    if store is None:
        raise ExportError(f"{source!r} is not a checkpoint or run directory (and no artifacts store to look up a run)")
    uri = _checkpoint_of(store, source)
    if uri is None:
        raise ExportError(
            f"{source!r} is neither a checkpoint or run directory nor a completed run or registered model in "
            f"{redact(store.root)}"
        )
    return _loaded(uri, source)


def _loaded(location: str, run_id: str | None) -> ExportSource:
    try:
        loaded = load_model(location)
    except FileNotFoundError:
        raise ExportError(f"{redact(location)} is not a senet-dist checkpoint") from None
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    return ExportSource(loaded=loaded, uri=loaded.location, run_id=run_id or loaded.meta.run_name)


def _checkpoint_of(store: ArtifactStore, run_or_model: str) -> str | None:
    from senet_dist.release.registry import find

    rec = find(store, run_or_model)
    if rec is not None and rec.checkpoint_uri:
        return rec.checkpoint_uri
    runs = [r for r in store.runs_latest().to_pylist() if r["run_id"] == run_or_model]
    if runs and runs[0]["status"] == "completed" and runs[0]["best_checkpoint_uri"]:
        return str(runs[0]["best_checkpoint_uri"])
    return None


def version_dir(src: ExportSource, data: str | os.PathLike[str] | None, store: ArtifactStore | None) -> str:
    """The dataset version directory to verify on: ``data`` when given, else the ``datasets`` table's record of the
    version the checkpoint was trained on."""
    from senet_dist.data import DatasetError, resolve_version

    if data is not None:
        try:
            return resolve_version(data)
        except DatasetError as exc:
            raise ExportError(str(exc)) from None
    version = src.loaded.meta.dataset_version
    row = store.latest("datasets", "version", version) if store is not None and version else None
    if row is not None and row.get("uri") and is_local(row["uri"]) and Path(row["uri"]).is_dir():
        return str(row["uri"])
    raise ExportError(
        f"cannot find dataset version {version!r} of {redact(src.uri)} to verify the export on its test images; "
        "pass --data SHARDS_ROOT_OR_VERSION_DIR"
    )


def real_test_images(
    version_dir: str | os.PathLike[str], pre: Preprocess, n: int, classes: list[str] | None = None
) -> tuple[torch.Tensor, str, str]:
    """``(images, version, split)``: up to ``n`` images of the version's report split (``test``; ``val`` for
    versions sharded without a test split), prepared as the evaluation loader prepares them."""
    from senet_dist.data import DatasetInfo, make_loader
    from senet_dist.evaluation.metrics import report_split

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
    return torch.cat(batches)[:n].float(), info.version, split


# ---- writing -----------------------------------------------------------------------------------------------
def example_input(images: torch.Tensor) -> torch.Tensor:
    """Two images: a batch of one would let tracing / torch.export specialise the batch dimension to 1."""
    return images[:2] if len(images) >= 2 else images.repeat(2, 1, 1, 1)[:2]


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


EXPORTERS: dict[str, Callable[[torch.nn.Module, torch.Tensor, Path], None]] = {
    "torchscript": _torchscript,
    "onnx": _onnx,
}


def require_onnx() -> None:
    """Fail before any work when the ``onnx`` extra is missing."""
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            raise ExportError(ONNX_EXTRA) from None


def check_target(out: str) -> None:
    """The target must be new or empty: an export is never mixed into (or over) another one."""
    if is_local(out):
        target = Path(out.removeprefix("file://")).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ExportError(f"{out} already exists and is not an empty directory; choose another --out")
        return
    if list_files(out):
        raise ExportError(f"{redact(out)} already holds objects; choose another --out")


def publish(build: Path, out: str) -> str:
    """Publish the finished ``build`` directory at ``out`` (checked empty again); returns where it now lives."""
    check_target(out)
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


# ---- verification ------------------------------------------------------------------------------------------
def verify(
    model: torch.nn.Module,
    runner: Any,
    images: torch.Tensor,
    *,
    atol: float = DEFAULT_ATOL,
    dataset_version: str = "",
    split: str = "test",
) -> Verification:
    """Compare ``runner`` (the exported model, loaded back) with ``model`` on ``images`` and on a batch of one.
    Kept apart from the writers so the check cannot depend on how the file was produced."""
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


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_IMAGES",
    "EXPORTERS",
    "ExportError",
    "ExportResult",
    "Verification",
    "VerificationError",
    "existing_export",
    "export_model",
    "real_test_images",
    "verify",
]
