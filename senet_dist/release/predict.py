"""Batch prediction: images (files, directories, URIs) -> one Parquet row per input with the top-k labels.

Every input becomes exactly one row, in input order; nothing is dropped. ``status`` says what happened:

- ``ok``: decoded and classified (``label``, ``probability``, ``top_labels``, ``top_probs``);
- ``empty``: a 0-byte file; ``not_image``: not a format Pillow recognises; ``corrupt``: recognised but undecodable
  (truncated, damaged); ``too_large``: over Pillow's decompression-bomb limit; ``unreadable``: cannot be read at
  all (missing, permission, I/O error). These rows carry the reason in ``error`` and no label.

Images are prepared exactly as the evaluation loader prepares test images (:class:`~.metadata.Preprocess`: RGB,
resize the shorter side, centre crop, normalise), so predictions match the reported test metrics. Locally, inputs
are read and decoded by a thread pool and classified in batches (CPU or GPU). With ``ray=True`` the same
:class:`BatchPredictor` runs in a pool of Ray Data actors (``map_batches`` with ``ActorPoolStrategy(size=N)``: one
model copy per actor, a GPU each when the cluster has enough), so the result equals local prediction.

This module resolves the model and runs the job; reading inputs and writing the output live in
:mod:`~senet_dist.release.predict_io`, the model side (local and Ray Data) in :mod:`~senet_dist.release.predictor`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senet_dist.artifacts import ArtifactStore
from senet_dist.release.predict_io import STATUSES, list_inputs, write_predictions
from senet_dist.release.predictor import BatchPredictor, predict_ray
from senet_dist.storage import is_uri

CHAMPION_PREFIX = "champion:"


class PredictError(ValueError):
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
def resolve_model(spec: str, store: ArtifactStore | None) -> tuple[str, str | None]:
    """``(location, model_id)`` for ``champion:DATASET``, a registered model id, or an export/checkpoint location.

    A registered model is served from its TorchScript export when it has one, else its ONNX export, else its
    checkpoint."""
    from senet_dist.release.registry import champion, find

    if spec.startswith(CHAMPION_PREFIX):
        dataset = spec[len(CHAMPION_PREFIX) :]
        rec = champion(store, dataset) if store is not None else None
        if rec is None:
            where = store.root if store is not None else "(no artifacts store)"
            raise PredictError(f"dataset {dataset!r} has no champion in {where}")
        return _served_from(rec), rec.model_id
    if is_uri(spec) or Path(spec).exists():
        return spec, None
    rec = find(store, spec) if store is not None else None
    if rec is None:
        raise PredictError(
            f"--model {spec!r} is not champion:DATASET, an export or checkpoint directory, nor a registered model id"
        )
    return _served_from(rec), rec.model_id


def _served_from(rec: Any) -> str:
    location = rec.export_for("torchscript") or rec.export_for() or rec.checkpoint_uri
    if not location:
        raise PredictError(f"model {rec.model_id} has neither an export nor a checkpoint")
    return str(location)


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
    location, model_id = resolve_model(model, store)
    paths = list_inputs(inputs)
    if not paths:
        raise PredictError(f"no inputs found in {[str(i) for i in inputs]}")
    if on_total is not None:
        on_total(len(paths))
    t0 = time.perf_counter()
    if use_ray:
        rows, described = predict_ray(
            location, paths, batch_size=batch_size, device=device, top_k=top_k, actors=actors, address=ray_address
        )
    else:
        predictor = BatchPredictor(location, device, top_k)
        described = predictor.describe()
        rows = []
        with ThreadPoolExecutor(predictor.read_threads) as pool:
            for chunk in _chunks(paths, batch_size):
                rows.extend(predictor.predict(chunk, pool))
                if progress is not None:
                    progress(len(chunk))
    described["model_id"] = model_id or described.get("model_id")
    seconds = time.perf_counter() - t0
    if out is not None:
        write_predictions(rows, str(out), described)
    counts = dict(Counter(r["status"] for r in rows))
    return PredictSummary(out=str(out), counts=counts, model=described, seconds=seconds, rows=rows)


def _chunks(items: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
