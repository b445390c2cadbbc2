"""The model side of prediction: :class:`BatchPredictor` (a loaded model classifying a batch of paths) and the same
predictor run as a pool of Ray Data actors (:func:`predict_ray`). Both produce rows through the one
:class:`BatchPredictor`, which is why Ray and local prediction give equal results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import torch

from senet_dist.release.predict_io import OUTPUT_SCHEMA, decode, describe, read_input
from senet_dist.release.runtime import Runner, open_model, read_card


class BatchPredictor:
    """A loaded model plus its input recipe: ``predict(paths)`` -> one output row per path (same order)."""

    def __init__(self, location: str, device: str = "auto", top_k: int = 5, *, read_threads: int = 4) -> None:
        self.location = location
        self.runner: Runner = open_model(location, device)
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

    def __init__(self, location: str, device: str, top_k: int) -> None:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.predictor = BatchPredictor(location, device, top_k, read_threads=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = self.predictor.predict(batch.column("path").to_pylist())
        table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
        return table.append_column("index", batch.column("index"))


def predict_ray(
    location: str,
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
            fn_constructor_kwargs={"location": location, "device": device if gpus else "cpu", "top_k": top_k},
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
    described = describe(read_card(location), location, top_k, "cuda" if gpus else "cpu") | {"ray_actors": actors}
    return rows, described
