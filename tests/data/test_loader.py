"""make_loader: equal training steps per rank, exact eval coverage, damaged shards, GPU byte path on CPU."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from senet_dist.data import DatasetInfo, LoaderConfig, ShardConfig, ShardReadError, make_loader, shard_dataset
from senet_dist.data.gpu_decode import decode_batch
from senet_dist.data.transforms import Normalizer
from senet_dist.devices import resolve_device
from tests.helpers import make_tree, write_image


def _version(tmp_path: Path, per_class: int, max_count: int, name: str = "v") -> Path:
    src = make_tree(tmp_path / f"src-{name}", {"a": per_class, "b": per_class, "c gray": 0})
    for i in range(per_class):  # a grayscale class: the loader must still give 3 channels
        write_image(src / "c gray" / f"g{i}.png", (36, 36), 500 + i, mode="L")
    cfg = ShardConfig(fractions=(0.5, 0.5, 0.0), max_count=max_count, progress=False, num_procs=1)
    return shard_dataset(src, tmp_path / f"out-{name}", cfg).version_dir


def _eval_keys(vdir: Path, split: str, world: int, workers: int) -> list[str]:
    keys: list[str] = []
    for rank in range(world):
        loader = make_loader(
            vdir,
            split,
            LoaderConfig(batch_size=4, image_size=16, num_workers=workers),
            rank=rank,
            world_size=world,
            return_keys=True,
        )
        got = [k for _, _, ks in loader for k in ks]
        assert len(got) > 0 or len(loader) == 0
        keys += got
    return keys


@pytest.mark.parametrize(
    ("per_class", "max_count", "world", "workers", "shards"), [(16, 6, 3, 0, 4), (8, 100, 2, 0, 1), (20, 6, 2, 2, 5)]
)
def test_eval_covers_every_sample_exactly_once(tmp_path: Path, per_class, max_count, world, workers, shards) -> None:
    vdir = _version(tmp_path, per_class, max_count)
    info = DatasetInfo.load(vdir)
    assert len(info.shards["val"]) == shards
    keys = _eval_keys(vdir, "val", world, workers)
    expected = {r["key"] for r in info.manifest().to_pylist() if r["split"] == "val"}
    assert Counter(keys) == Counter(expected)  # no duplicates, no drops, no padding


@pytest.mark.parametrize(("world", "workers"), [(3, 0), (2, 2)])
def test_training_steps_equal_on_every_rank(tmp_path: Path, world: int, workers: int) -> None:
    vdir = _version(tmp_path, 22, 7)  # 33 train samples in 5 shards: uneven per rank
    info = DatasetInfo.load(vdir)
    cfg = LoaderConfig(batch_size=4, image_size=16, num_workers=workers)
    expected_steps = info.counts["train"] // (world * 4)
    for rank in range(world):
        loader = make_loader(vdir, "train", cfg, rank=rank, world_size=world)
        batches = list(loader)
        assert len(loader) == expected_steps == len(batches)
        for x, y in batches:
            assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
            assert set(y.tolist()) <= {0, 1, 2}


def test_training_reshuffles_per_epoch_and_is_seeded(tmp_path: Path) -> None:
    vdir = _version(tmp_path, 12, 5)
    cfg = LoaderConfig(batch_size=3, image_size=16, num_workers=0)

    def keys(epoch: int) -> list[str]:
        return [k for _, _, ks in make_loader(vdir, "train", cfg, epoch=epoch, return_keys=True) for k in ks]

    assert keys(0) == keys(0) and keys(0) != keys(1)


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_shard_error_names_it(tmp_path: Path, workers: int) -> None:
    vdir = _version(tmp_path, 16, 6)
    shard = Path(DatasetInfo.load(vdir).shards["val"][1])
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardReadError, match=shard.name):
        _eval_keys(vdir, "val", 1, workers)


def test_shard_cut_at_member_boundary_is_detected(tmp_path: Path) -> None:
    vdir = _version(tmp_path, 16, 6)
    shard = Path(DatasetInfo.load(vdir).shards["val"][0])
    import tarfile

    with tarfile.open(shard) as tf:
        members = tf.getmembers()
    keep = members[2]  # cut right after the first sample: a silently short tar
    shard.write_bytes(shard.read_bytes()[: keep.offset])
    with pytest.raises(ShardReadError, match=f"{shard.name}.*manifest"):
        _eval_keys(vdir, "val", 1, 0)


def test_gpu_byte_path_decodes_on_cpu(tmp_path: Path) -> None:
    vdir = _version(tmp_path, 8, 100)
    cfg = LoaderConfig(batch_size=5, image_size=16, num_workers=0, gpu_decode=True, decode_device="cpu")
    for train in (True, False):
        batches = list(make_loader(vdir, "val", cfg, train=train))
        x, y = batches[0]
        assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and x.device.type == "cpu"
    stream_batch = next(iter(make_loader(vdir, "val", cfg).stream))
    datas, labels, keys = stream_batch
    assert all(d.dtype == torch.uint8 and d.ndim == 1 for d in datas) and len(keys) == 5
    out = decode_batch(datas, train=False, image_size=16, device="cpu", normalizer=Normalizer((0.5,) * 3, (0.5,) * 3))
    assert out.shape == (5, 3, 16, 16) and -1.01 <= out.min() and out.max() <= 1.01


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_gpu_decode_without_cuda_falls_back_or_errors(tmp_path: Path) -> None:
    assert resolve_device("cuda", "cpu") == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="needs CUDA.*gpu_fallback"):
        make_loader(_version(tmp_path, 4, 4), "train", LoaderConfig(gpu_decode=True, gpu_fallback="error"))


def test_persistent_workers_replay_the_loaders_epoch(tmp_path: Path) -> None:
    vdir = _version(tmp_path, 12, 5)
    cfg = LoaderConfig(batch_size=3, image_size=16, num_workers=1, persistent_workers=True)
    loader = make_loader(vdir, "train", cfg, return_keys=True)
    first = [k for _, _, ks in loader for k in ks]
    assert [k for _, _, ks in loader for k in ks] == first  # the workers keep epoch 0
    next_epoch = make_loader(vdir, "train", cfg, epoch=1, return_keys=True)  # what the training worker does
    second = [k for _, _, ks in next_epoch for k in ks]
    assert len(second) == len(first) == len(loader) * 3 and second != first
