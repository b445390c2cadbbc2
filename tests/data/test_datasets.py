"""Offline real datasets: fashion-mnist (Debian IDX files) and lfw-subset (scikit-image), sharded end to end."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from senet_dist.data import (
    DatasetError,
    DatasetInfo,
    LoaderConfig,
    ShardConfig,
    dataset_specs,
    fetch_dataset,
    list_datasets,
    make_loader,
    shard_dataset,
)
from senet_dist.data.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")


def test_list_datasets() -> None:
    assert set(list_datasets()) == {"fashion-mnist", "lfw-subset"}
    specs = dataset_specs()
    assert [s.name for s in specs] == sorted(list_datasets())
    assert all(s.licence and callable(s.fetcher) and list_datasets()[s.name] == s.description for s in specs)


def test_lfw_subset_to_shards_and_loader(tmp_path: Path) -> None:
    src = fetch_dataset("lfw-subset", tmp_path / "lfw")
    assert sorted(p.name for p in src.iterdir() if p.is_dir()) == ["face", "non_face"]
    assert len(list((src / "face").glob("*.png"))) == 100 and len(list((src / "non_face").glob("*.png"))) == 100
    assert Image.open(next((src / "face").glob("*.png"))).size == (25, 25)  # nothing upscaled on disk
    res = shard_dataset(src, tmp_path / "out", ShardConfig(progress=False, num_procs=1))
    assert res.counts == {"train": 160, "val": 20, "test": 20}
    x, y = next(iter(make_loader(res.version_dir, "train", LoaderConfig(batch_size=16, image_size=32, num_workers=0))))
    assert x.shape == (16, 3, 32, 32) and set(y.tolist()) <= {0, 1}


@needs_fmnist
def test_fashion_mnist_subset_keeps_official_test_split(tmp_path: Path) -> None:
    dest = fetch_dataset("fashion-mnist", tmp_path / "fm", limit_per_class=6, num_procs=1)
    assert sorted(p.name for p in (dest / "train").iterdir()) == sorted(FASHION_MNIST_CLASSES)
    assert all(
        len(list((dest / split / c).glob("*.png"))) == 6 for split in ("train", "test") for c in FASHION_MNIST_CLASSES
    )
    img = Image.open(next((dest / "test" / "Bag").glob("*.png")))
    assert img.size == (28, 28) and img.mode == "L"
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*.png")}
    assert fetch_dataset("fashion-mnist", dest, limit_per_class=6) == dest  # idempotent: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*.png")} == before
    with pytest.raises(DatasetError, match="already holds"):
        fetch_dataset("fashion-mnist", dest, limit_per_class=7)
    res = shard_dataset(dest, tmp_path / "out", ShardConfig(progress=False, num_procs=1, resize_shorter=None))
    info = DatasetInfo.load(res.version_dir)
    assert info.raw["split_mode"] == "predefined" and info.counts["test"] == 60
    assert info.counts["train"] + info.counts["val"] == 60 and info.counts["val"] == 10  # 1 val per class
    assert all(r["path"].startswith("test/") for r in info.manifest().to_pylist() if r["split"] == "test")


def test_read_idx_roundtrip_and_truncation(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    good = tmp_path / "x-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(header + arr.tobytes()))
    assert np.array_equal(read_idx(good), arr)
    bad = tmp_path / "y-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(header + arr.tobytes()[:-5]))
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(bad)


def test_missing_source_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        fetch_dataset("fashion-mnist", tmp_path / "d", source_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="lfw-subset"):
        fetch_dataset("imagenet", tmp_path / "d")
