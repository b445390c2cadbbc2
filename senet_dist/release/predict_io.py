"""Prediction's inputs and output: listing and reading the inputs, decoding an image into a status, and the Parquet
file every input becomes one row of. Kept apart from the model (:mod:`~senet_dist.release.predictor`) so the
row contract (:data:`STATUSES`, :data:`OUTPUT_SCHEMA`) lives in one place that both local and Ray runs share."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from senet_dist.release.metadata import ModelCard
from senet_dist.storage import is_local, is_uri, join, list_files, read_bytes, resolve_filesystem, write_bytes

STATUSES = ("ok", "empty", "not_image", "corrupt", "too_large", "unreadable")
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("label", pa.string()),
        pa.field("probability", pa.float64()),
        pa.field("top_labels", pa.list_(pa.string())),
        pa.field("top_probs", pa.list_(pa.float64())),
    ]
)


def list_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files as given; directories (local or URI prefixes) expanded to every file under them, sorted. A name that
    does not exist stays in the list (it becomes an ``unreadable`` row), so nothing asked for is dropped."""
    found: list[str] = []
    for item in inputs:
        loc = str(item)
        if is_uri(loc):
            fs, path = resolve_filesystem(loc)
            if fs.get_file_info(path).type == pafs.FileType.Directory:
                found.extend(join(loc, rel) for rel in list_files(loc))
                continue
            found.append(loc)
        elif Path(loc).is_dir():
            found.extend(str(p) for p in sorted(Path(loc).rglob("*")) if p.is_file())
        else:
            found.append(loc)
    return found


def read_input(location: str) -> bytes:
    if is_local(location):
        return Path(location.removeprefix("file://")).read_bytes()
    return read_bytes(location)


def decode(data: bytes) -> tuple[Image.Image | None, str, str | None]:
    """``(RGB image, "ok", None)`` or ``(None, status, reason)``."""
    if not data:
        return None, "empty", "empty file (0 bytes)"
    try:
        opened = Image.open(io.BytesIO(data))
        opened.load()
        img: Image.Image = ImageOps.exif_transpose(opened) or opened
        return (img if img.mode == "RGB" else img.convert("RGB")), "ok", None
    except Image.DecompressionBombError as exc:
        return None, "too_large", f"DecompressionBombError: {exc}"
    except UnidentifiedImageError:
        return None, "not_image", "not a recognised image format"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:  # Pillow's decoders' errors
        return None, "corrupt", f"{type(exc).__name__}: {exc}"


def describe(card: ModelCard, location: str, top_k: int, device: str) -> dict[str, Any]:
    """What the output's ``senet.model`` metadata says about the model that made it."""
    return {
        "location": location,
        "format": card.format,
        "model_id": card.model_id,
        "run_id": card.run_id,
        "variant": card.variant,
        "classes": list(card.class_names),
        "top_k": max(1, min(top_k, len(card.class_names))),
        "device": device,
    }


def write_predictions(rows: list[dict[str, Any]], out: str, model: dict[str, Any]) -> None:
    """One Parquet file; the model's description goes into the schema metadata (``senet.model``)."""
    table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
    table = table.replace_schema_metadata({"senet.model": json.dumps(model, sort_keys=True, default=str)})
    if is_local(out):
        path = Path(out.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    write_bytes(out, buf.getvalue().to_pybytes())
