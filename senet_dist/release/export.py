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

The steps live in their own modules: :mod:`~senet_dist.release.export_source` (the checkpoint and the test images),
:mod:`~senet_dist.release.writers` (exporters and publishing), :mod:`~senet_dist.release.verify` (the comparison);
this module assembles them and fills in ``model.json``. Their public names are re-exported here.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.release.errors import ExportError, VerificationError
from senet_dist.release.export_source import real_test_images, resolve_source, version_dir
from senet_dist.release.metadata import CARD_FILE, FORMATS, ModelCard, Preprocess, check_format
from senet_dist.release.reevaluate import test_metrics
from senet_dist.release.runtime import card_from_checkpoint, load_file
from senet_dist.release.verify import DEFAULT_ATOL, Verification, verify
from senet_dist.release.writers import EXPORTERS, check_target, example_input, publish, require_onnx
from senet_dist.storage import join, read_bytes
from senet_dist.train.checkpoint import model_from_checkpoint

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_IMAGES",
    "ExportError",
    "ExportResult",
    "Verification",
    "VerificationError",
    "existing_export",
    "export_model",
    "real_test_images",
    "verify",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGES = 32

_EXPORTERS = EXPORTERS  # the same dict: looked up here at export time (tests swap an exporter through it)


@dataclass
class ExportResult:
    uri: str
    card: ModelCard
    verification: Verification
    files: list[str] = field(default_factory=list)


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
        require_onnx()
    out = str(out)
    check_target(out)
    with tempfile.TemporaryDirectory(prefix="senet-export-") as tmp:
        src = resolve_source(str(source), store, Path(tmp) / "checkpoint")
        vdir = version_dir(src, data, store)
        pre = Preprocess.from_checkpoint_meta(src.meta)
        images, info, split = real_test_images(vdir, pre, num_images, src.meta["classes"])
        model, meta = model_from_checkpoint(src.checkpoint, map_location="cpu")  # the weights evaluation scores
        model.eval()
        build = Path(tmp) / "build"
        build.mkdir()
        card = card_from_checkpoint(meta, src.uri)
        card.format, card.file = fmt, FORMATS[fmt]
        _EXPORTERS[fmt](model, example_input(images), build / card.file)
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
        card.test_metrics, _ = test_metrics(
            store, vdir, run_id=src.run_id, checkpoint=src.checkpoint, record=False, device="cpu"
        )
        card.exported_at = utcnow().isoformat()
        card.verification = verification.to_dict()
        card.versions = _versions(fmt)
        (build / CARD_FILE).write_text(card.to_json())
        files = sorted(p.name for p in build.iterdir())
        uri = publish(build, out)
    if registered is not None and store is not None:
        from senet_dist.release.promotion import record_export

        record_export(store, registered.model_id, uri)
    log.info("exported %s as %s to %s (max |diff| %.2g)", src.uri, fmt, uri, verification.max_abs_diff)
    return ExportResult(uri=uri, card=card, verification=verification, files=files)


def existing_export(location: str) -> ModelCard | None:
    """The card of a complete export at ``location``, or None."""
    try:
        return ModelCard.from_json(read_bytes(join(location, CARD_FILE)))
    except (FileNotFoundError, OSError):
        return None


# ---- metadata -------------------------------------------------------------------------------------------
def _registered(store: ArtifactStore | None, model_id: str | None) -> Any:
    if store is None or not model_id:
        return None
    from senet_dist.release.registry import find

    return find(store, model_id)


def _versions(fmt: str) -> dict[str, str]:
    names = ["senet-dist", "torch"] + (["onnx", "onnxruntime", "onnxscript"] if fmt == "onnx" else [])
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out
