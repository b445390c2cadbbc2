"""Batch prediction: images (files, directories, URIs) -> one Parquet row per input with the top-k labels.

Every input becomes exactly one row, in input order; nothing is dropped. ``status`` says what happened:

- ``ok``: decoded and classified (``label``, ``probability``, ``top_labels``, ``top_probs``);
- ``empty``: a 0-byte file; ``not_image``: not a format Pillow recognises; ``corrupt``: recognised but undecodable
  (truncated, damaged); ``too_large``: over Pillow's decompression-bomb limit; ``unreadable``: cannot be read at
  all (missing, permission, I/O error). These rows carry the reason in ``error`` and no label.

Images are prepared exactly as the evaluation loader prepares test images (``Preprocess``, the model card's: RGB,
resize the shorter side, centre crop, normalise), so predictions match the reported test metrics. Locally, inputs
are read and decoded by a thread pool and classified in batches (CPU or GPU). With ``ray=True`` the same
:class:`BatchPredictor` runs in a pool of Ray Data actors (``map_batches`` with ``ActorPoolStrategy(size=N)``: one
model copy per actor, a GPU each when the cluster has enough), so the result equals local prediction.

The row contract (:data:`STATUSES`, :data:`OUTPUT_SCHEMA`) lives here once, for local and Ray runs alike. A
registered model (``champion:DATASET`` or its id) is served from its export, whose file must match the digest the
registry recorded for it.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from senet_dist.errors import PermanentError
from senet_dist.release.runtime import ModelCard, Runner, open_model, read_card
from senet_dist.storage import is_local, is_uri, join, list_files, read_bytes, redact, resolve_filesystem, write_bytes

if TYPE_CHECKING:
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.release.registry import ModelRecord

CHAMPION_PREFIX = "champion:"


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
        "location": redact(location),
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


class PredictError(PermanentError, ValueError):
    """The model or the inputs cannot be resolved (unknown champion, nothing to predict...)."""


@dataclass
class PredictSummary:
    out: str
    counts: dict[str, int]
    model: dict[str, Any]
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def counts_line(self) -> str:
        return ", ".join(f"{s} {self.counts.get(s, 0)}" for s in STATUSES if self.counts.get(s, 0) or s == "ok")


# ---- which model --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServedModel:
    """Where a prediction's model is read from, and the digest its file must have (a registered export's)."""

    location: str
    model_id: str | None = None
    sha256: str | None = None


def resolve_model(spec: str, store: ArtifactStore | None) -> ServedModel:
    """``champion:DATASET``, a registered model id, or an export/checkpoint location -> where to read the model.

    A registered model is served from its TorchScript export when it has one, else its ONNX export, else its
    checkpoint; an export carries the model file's digest that the registry recorded when it was made."""
    from senet_dist.release.registry import champion, find

    if spec.startswith(CHAMPION_PREFIX):
        dataset = spec[len(CHAMPION_PREFIX) :]
        rec = champion(store, dataset) if store is not None else None
        if rec is None:
            where = redact(store.root) if store is not None else "(no artifacts store)"
            raise PredictError(f"dataset {dataset!r} has no champion in {where}")
        return _served_from(rec)
    if is_uri(spec) or Path(spec).exists():
        return ServedModel(spec)
    rec = find(store, spec) if store is not None else None
    if rec is None:
        raise PredictError(
            f"--model {spec!r} is not champion:DATASET, an export or checkpoint directory, nor a registered model id"
        )
    return _served_from(rec)


def _served_from(rec: ModelRecord) -> ServedModel:
    export = rec.export_for("torchscript") or rec.export_for()
    location = export or rec.checkpoint_uri
    if not location:
        raise PredictError(f"model {rec.model_id} has neither an export nor a checkpoint")
    return ServedModel(str(location), rec.model_id, rec.digest_of(export) if export else None)


# ---- the whole job ------------------------------------------------------------------------------------------
def predict(
    model: str,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None,
    *,
    store: ArtifactStore | None = None,
    batch_size: int = 64,
    device: str = "auto",
    top_k: int = 5,
    use_ray: bool = False,
    actors: int = 2,
    ray_address: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PredictSummary:
    """Predict every input with ``model`` (see :func:`resolve_model`) and write ``out`` (Parquet, path or URI).

    ``progress(n)`` is called after each batch of ``n`` inputs (local runs), ``on_total(total)`` once the inputs
    are listed."""
    if batch_size < 1 or top_k < 1 or actors < 1:
        raise PredictError("batch size, top-k and actors must be >= 1")
    served = resolve_model(model, store)
    paths = list_inputs(inputs)
    if not paths:
        raise PredictError(f"no inputs found in {[str(i) for i in inputs]}")
    if on_total is not None:
        on_total(len(paths))
    t0 = time.perf_counter()
    if use_ray:
        rows, described = predict_ray(
            served, paths, batch_size=batch_size, device=device, top_k=top_k, actors=actors, address=ray_address
        )
    else:
        predictor = BatchPredictor(served, device, top_k)
        described = predictor.describe()
        rows = []
        with ThreadPoolExecutor(predictor.read_threads) as pool:
            for chunk in _chunks(paths, batch_size):
                rows.extend(predictor.predict(chunk, pool))
                if progress is not None:
                    progress(len(chunk))
    described["model_id"] = served.model_id or described.get("model_id")
    seconds = time.perf_counter() - t0
    if out is not None:
        write_predictions(rows, str(out), described)
    counts = dict(Counter(r["status"] for r in rows))
    return PredictSummary(out=str(out), counts=counts, model=described, seconds=seconds, rows=rows)


def _chunks(items: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# ---- the model side: one BatchPredictor, locally or in Ray Data actors -------------------------------------
class BatchPredictor:
    """A loaded model plus its input recipe: ``predict(paths)`` -> one output row per path (same order)."""

    def __init__(self, served: ServedModel, device: str = "auto", top_k: int = 5, *, read_threads: int = 4) -> None:
        self.location = served.location
        self.runner: Runner = open_model(served.location, device, expected_sha256=served.sha256)
        pre = self.runner.preprocess
        self.transform, self.normalize = pre.transform(), pre.normalizer()
        self.classes = self.runner.classes
        self.top_k = max(1, min(top_k, len(self.classes)))
        self.read_threads = read_threads

    def describe(self) -> dict[str, Any]:
        return describe(self.runner.card, self.location, self.top_k, str(self.runner.device))

    def load(self, path: str) -> tuple[torch.Tensor | None, str, str | None]:
        """One input -> (uint8 CHW tensor ready to normalise, status, reason)."""
        try:
            data = read_input(path)
        except (OSError, ValueError) as exc:
            return None, "unreadable", f"{type(exc).__name__}: {exc}"
        img, status, reason = decode(data)
        if img is None:
            return None, status, reason
        try:
            return self.transform(img), "ok", None
        except (RuntimeError, ValueError) as exc:  # e.g. a 0-pixel image
            return None, "corrupt", f"{type(exc).__name__}: {exc}"

    def predict(self, paths: Sequence[str], pool: ThreadPoolExecutor | None = None) -> list[dict[str, Any]]:
        loaded = list(pool.map(self.load, paths)) if pool is not None else [self.load(p) for p in paths]
        rows: list[dict[str, Any]] = [
            {
                "path": p,
                "status": s,
                "error": e,
                "label": None,
                "probability": None,
                "top_labels": None,
                "top_probs": None,
            }
            for p, (_, s, e) in zip(paths, loaded, strict=True)
        ]
        ok = [i for i, (t, _, _) in enumerate(loaded) if t is not None]
        if ok:
            batch = self.normalize(torch.stack([loaded[i][0] for i in ok]))  # type: ignore[misc]
            probs = torch.softmax(self.runner(batch).double(), dim=1)
            top = probs.topk(self.top_k, dim=1)
            for j, i in enumerate(ok):
                labels = [self.classes[k] for k in top.indices[j].tolist()]
                values = top.values[j].tolist()
                rows[i].update(label=labels[0], probability=values[0], top_labels=labels, top_probs=values)
        return rows


# ---- Ray Data -----------------------------------------------------------------------------------------------
class RayPredictor:
    """A Ray Data actor: loads the model once, then classifies each batch of paths it is given."""

    def __init__(self, served: ServedModel, device: str, top_k: int) -> None:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.predictor = BatchPredictor(served, device, top_k, read_threads=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = self.predictor.predict(batch.column("path").to_pylist())
        table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
        return table.append_column("index", batch.column("index"))


def predict_ray(
    served: ServedModel,
    paths: Sequence[str],
    *,
    batch_size: int = 64,
    device: str = "auto",
    top_k: int = 5,
    actors: int = 2,
    address: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for ``paths`` computed by ``actors`` Ray Data actors (one model copy each); input order kept.

    Actors read ``location`` and the inputs themselves: on a multi-node cluster use URIs or shared storage."""
    import ray

    from senet_dist.train.session import RaySession

    with RaySession(address):
        gpus = 1 if device != "cpu" and ray.cluster_resources().get("GPU", 0) >= actors else 0
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)])
        predicted = ds.map_batches(
            RayPredictor,
            fn_constructor_kwargs={"served": served, "device": device if gpus else "cpu", "top_k": top_k},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),  # a fixed pool; each actor holds one model copy
            num_cpus=1,
            num_gpus=gpus,
        )
        table = pa.concat_tables(ray.get(predicted.to_arrow_refs()))
    table = table.sort_by("index")
    if table.num_rows != len(paths) or table.column("index").to_pylist() != list(range(len(paths))):
        raise RuntimeError(f"Ray prediction returned {table.num_rows} rows for {len(paths)} inputs")
    rows = table.drop_columns(["index"]).to_pylist()
    location = served.location
    described = describe(read_card(location), location, top_k, "cuda" if gpus else "cpu") | {"ray_actors": actors}
    return rows, described
