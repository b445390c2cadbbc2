"""Real datasets available offline, written out as ImageFolder trees ready for ``shard_dataset``.

Each dataset is declared once, as a :class:`DatasetSpec` in :data:`DATASETS` (name, fetcher, licence, description),
so the CLI, the pipeline and the docs list the same names, licences and texts.

- fashion-mnist: Debian package ``dataset-fashion-mnist`` (gzipped IDX files) -> DEST/{train,test}/<class>/*.png,
  keeping the official test split (``split_mode="auto"`` detects it).
- lfw-subset: ``skimage.data.lfw_subset()`` (100 faces + 100 non-faces, 25x25) -> DEST/{face,non_face}/*.png.
A ``.complete.json`` marker makes fetching idempotent: a second call with the same arguments writes nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .source import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
)
MARKER = ".complete.json"

# (dest, limit_per_class, num_procs, source_dir) -> {split: {class: count}}
Fetcher = Callable[[Path, int | None, int, Path | None], dict]


@dataclass(frozen=True)
class DatasetSpec:
    """One built-in dataset: how to materialise it, under which terms, and a one-line description."""

    name: str
    fetcher: Fetcher
    licence: str
    description: str


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file: big-endian magic (0, 0, dtype, ndim), then ndim uint32 dims, then data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def _write_pngs(job: tuple[np.ndarray, list[str]]) -> int:
    images, paths = job
    for img, p in zip(images, paths, strict=True):
        Image.fromarray(img, "L").save(p, compress_level=1)
    return len(paths)


def _select(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices in file order, at most ``limit`` per class."""
    if limit is None:
        return np.arange(len(labels))
    keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)])
    return np.sort(keep)


def _write_tree(
    dest: Path,
    split: str | None,
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    limit: int | None,
    num_procs: int,
) -> dict[str, int]:
    base = dest / split if split else dest
    for c in classes:
        (base / c).mkdir(parents=True, exist_ok=True)
    idx = _select(labels, limit)
    prefix = f"{split}-" if split else ""
    paths = [str(base / classes[labels[i]] / f"{prefix}{i:05d}.png") for i in idx]
    chunk = 2000
    jobs = [(images[idx[s : s + chunk]], paths[s : s + chunk]) for s in range(0, len(idx), chunk)]
    if num_procs <= 1 or len(jobs) <= 1:
        list(map(_write_pngs, jobs))
    else:
        with ProcessPoolExecutor(max_workers=num_procs) as pool:
            list(pool.map(_write_pngs, jobs))
    return {classes[c]: int(np.sum(labels[idx] == c)) for c in range(len(classes))}


def _fashion_mnist(dest: Path, limit: int | None, num_procs: int, source_dir: Path | None) -> dict:
    src = source_dir or Path(os.environ.get("SENET_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    files = {
        s: (src / f"{p}-images-idx3-ubyte.gz", src / f"{p}-labels-idx1-ubyte.gz")
        for s, p in (("train", "train"), ("test", "t10k"))
    }
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise DatasetError(
            f"fashion-mnist source files not found ({missing[0]}); install them with "
            "`sudo apt-get install dataset-fashion-mnist` or set SENET_FASHION_MNIST_DIR"
        )
    counts = {}
    for split, (img_path, lbl_path) in files.items():
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if len(images) != len(labels):
            raise DatasetError(f"{img_path} and {lbl_path} disagree on the number of samples")
        counts[split] = _write_tree(dest, split, images, labels, FASHION_MNIST_CLASSES, limit, num_procs)
    return counts


def _lfw_subset(dest: Path, limit: int | None, num_procs: int, source_dir: Path | None) -> dict:
    try:
        from skimage.data import lfw_subset
    except ImportError as exc:
        raise DatasetError("lfw-subset needs scikit-image: `pip install scikit-image`") from exc
    faces = lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces
    images = np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)
    labels = np.repeat(np.arange(2), len(images) // 2)
    return {"all": _write_tree(dest, None, images, labels, ("face", "non_face"), limit, 1)}


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "fashion-mnist",
            _fashion_mnist,
            "MIT (Zalando Research), via the Debian package dataset-fashion-mnist",
            "Fashion-MNIST 28x28 grayscale, 10 classes, 60k train + 10k test (apt: dataset-fashion-mnist)",
        ),
        DatasetSpec(
            "lfw-subset",
            _lfw_subset,
            "LFW database terms (research use), shipped by scikit-image (BSD-3-Clause)",
            "LFW subset 25x25 grayscale, face vs non_face, 200 images (pip: scikit-image)",
        ),
    )
}


def dataset_specs() -> list[DatasetSpec]:
    """Every built-in dataset, in name order."""
    return [DATASETS[name] for name in sorted(DATASETS)]


def list_datasets() -> dict[str, str]:
    """Dataset name -> one-line description."""
    return {spec.name: spec.description for spec in dataset_specs()}


def fetch_dataset(
    name: str,
    dest: str | os.PathLike,
    *,
    limit_per_class: int | None = None,
    num_procs: int | None = None,
    source_dir: str | os.PathLike | None = None,
) -> Path:
    """Write dataset ``name`` as an ImageFolder tree under ``dest``; returns ``dest``. Idempotent."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    if limit_per_class is not None and limit_per_class < 1:
        raise DatasetError("limit_per_class must be >= 1 or None")
    dest = Path(dest).expanduser().resolve()
    request = {"name": name, "limit_per_class": limit_per_class}
    marker = dest / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in request} == request:
            return dest
        raise DatasetError(
            f"{dest} already holds {done.get('name')} (limit_per_class={done.get('limit_per_class')}); "
            "use another destination"
        )
    dest.mkdir(parents=True, exist_ok=True)
    procs = num_procs if num_procs is not None else min(os.cpu_count() or 1, 8)
    counts = DATASETS[name].fetcher(dest, limit_per_class, procs, Path(source_dir) if source_dir else None)
    tmp = dest / (MARKER + ".tmp")
    tmp.write_text(json.dumps({**request, "counts": counts}, indent=2))
    os.replace(tmp, marker)  # written last: a crash mid-way is simply redone
    return dest
