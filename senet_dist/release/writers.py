"""How an export is written: the per-format exporters (TorchScript by tracing, ONNX by ``torch.onnx.export`` with a
dynamic batch dimension) and publishing the finished, verified directory so that a reader never sees a partial
export: locally by one ``rename``, on object storage by uploading ``model.json`` last (it marks completion)."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from senet_dist.release.errors import ExportError
from senet_dist.release.metadata import CARD_FILE, INPUT_NAME, OUTPUT_NAME
from senet_dist.release.runtime import ONNX_EXTRA
from senet_dist.storage import is_local, join, list_files, write_bytes


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
        raise ExportError(f"{out} already holds objects; choose another --out")


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
