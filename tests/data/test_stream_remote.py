"""ShardStream over shards on S3 (moto behind tests/s3proxy.py): the same samples as from local disk, through a
storage outage, a failure when the outage outlasts the retry budget, and damaged remote shards."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from senet_dist.data import DatasetInfo, ShardReadError
from senet_dist.data.reader import RetryPolicy, ShardUnavailableError
from senet_dist.data.stream import ShardStream
from senet_dist.data.transforms import ImageDecoder, build_transform, uint8_collate
from senet_dist.errors import PermanentError, is_retryable
from senet_dist.storage import resolve_filesystem, upload_dir, write_bytes
from tests.helpers import wait_until
from tests.s3proxy import TcpProxy

Shards = list[tuple[str, int]]


@pytest.fixture
def lfw(lfw_shards_factory) -> Path:
    return lfw_shards_factory(None)  # 200 real images; train: 8 shards of 20 (tests/train shares it)


def _shards(vdir: Path, split: str, base: str) -> Shards:
    info = DatasetInfo.load(vdir)
    return [(f"{base}/{Path(p).name}", n) for p, n in info.shard_entries(split)]


def _upload(vdir: Path, bucket: str) -> str:
    base = f"s3://{bucket}/v"
    upload_dir(vdir, base)
    return base


def _stream(shards: Shards, *, train: bool, workers: int, retry: RetryPolicy | None = None) -> ShardStream:
    return ShardStream(
        shards,
        rank=0,
        world=1,
        workers=workers,
        train=train,
        batch_size=8,
        steps=25,  # training: 200 samples from 160, so every slot cycles its shards
        seed=3,
        epoch=0,
        shuffle_buffer=50,
        decode=ImageDecoder(build_transform(16, train)),
        collate=uint8_collate,
        retry=retry,
    )


def _read(stream: ShardStream, workers: int, on_batch=None) -> tuple[list[str], torch.Tensor]:
    torch.manual_seed(0)  # the augmentation RNG when reading in this process
    keys, images = [], []
    for i, (x, _, ks) in enumerate(DataLoader(stream, batch_size=None, num_workers=workers)):
        keys += ks
        images.append(x)
        if on_batch is not None:
            on_batch(i)
    return keys, torch.cat(images)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("train", [True, False])
def test_s3_stream_reads_what_the_local_stream_reads(lfw: Path, s3_proxy: TcpProxy, s3_bucket: str, workers, train):
    base = _upload(lfw, s3_bucket)
    local_keys, local_images = _read(_stream(_shards(lfw, "train", str(lfw)), train=train, workers=workers), workers)
    keys, images = _read(_stream(_shards(lfw, "train", base), train=train, workers=workers), workers)
    assert keys == local_keys and torch.equal(images, local_images)  # same samples, order and augmentation
    assert len(keys) == (200 if train else 160) and s3_proxy.connections > 0


def test_outage_mid_read_is_retried_and_nothing_is_lost(
    lfw: Path, s3_proxy: TcpProxy, s3_bucket: str, caplog: pytest.LogCaptureFixture
):
    shards = _shards(lfw, "train", _upload(lfw, s3_bucket))
    outage = threading.Thread(target=s3_proxy.outage, args=(3.0,))

    def after(batch: int) -> None:
        if batch == 0:  # storage goes away after the first samples, for ~3 s (the default budget rides out ~15 s)
            outage.start()
            wait_until(lambda: s3_proxy.is_down, 10, "proxy down")

    with caplog.at_level(logging.WARNING, logger="senet_dist.data.reader"):
        keys, _ = _read(_stream(shards, train=False, workers=0), 0, after)
    outage.join()
    expected = {r["key"] for r in DatasetInfo.load(lfw).manifest().to_pylist() if r["split"] == "train"}
    assert sorted(keys) == sorted(expected)  # every sample exactly once
    assert any("retry" in r.getMessage() for r in caplog.records)  # the outage was hit, and ridden out


@pytest.mark.parametrize("workers", [0, 2])
def test_outage_beyond_the_retry_budget_fails_with_one_retryable_line(
    lfw: Path, s3_proxy: TcpProxy, s3_bucket: str, workers: int
):
    shards = _shards(lfw, "train", _upload(lfw, s3_bucket))
    s3_proxy.down()
    with pytest.raises(ShardUnavailableError) as info:
        _read(_stream(shards, train=False, workers=workers, retry=RetryPolicy(attempts=2, base_delay=0.1)), workers)
    assert not isinstance(info.value, PermanentError) and is_retryable(info.value)  # also from a loader worker
    message = str(info.value)
    if workers == 0:  # a DataLoader worker's error arrives with its traceback appended
        assert "\n" not in message
    assert f"shard {shards[0][0]} unavailable: 2 attempts over" in message
    assert "last error: OSError: " in message and "testing" not in message  # the cause, no credential


def test_missing_remote_shard_names_its_uri_and_expected_count(lfw: Path, s3_bucket: str, s3_server):
    shards = _shards(lfw, "train", _upload(lfw, s3_bucket))
    uri, n = shards[3]
    fs, path = resolve_filesystem(uri)
    fs.delete_file(path)
    # a query string may carry settings or secrets: the error names the object without it
    query = f"endpoint_override={s3_server.endpoint.split('://')[1]}&scheme=http&region=us-east-1"
    with pytest.raises(ShardReadError) as info:
        _read(_stream([(f"{loc}?{query}", k) for loc, k in shards], train=False, workers=0), 0)
    message = str(info.value)
    assert f"cannot read shard {uri} (missing, truncated or corrupt?, {n} samples expected)" in message
    assert "?endpoint" not in message and "endpoint_override" not in message


@pytest.mark.parametrize("cut", ["mid-member", "member-boundary"])
def test_truncated_remote_shard_names_its_uri_and_expected_count(lfw: Path, s3_bucket: str, s3_server, cut):
    shards = _shards(lfw, "train", _upload(lfw, s3_bucket))
    uri, n = shards[2]
    local = lfw / uri.rsplit("/", 1)[1]
    data = local.read_bytes()
    if cut == "mid-member":
        write_bytes(uri, data[: len(data) // 2 + 100])
        match = rf"{uri} \(missing, truncated or corrupt\?, {n} samples expected\)"
    else:
        import tarfile

        with tarfile.open(local) as tf:
            write_bytes(uri, data[: tf.getmembers()[4].offset])  # two whole samples, then the end: a short tar
        match = rf"{uri} holds 2 samples but the manifest says {n}"
    with pytest.raises(ShardReadError, match=match):
        _read(_stream(shards, train=False, workers=2), 2)


def test_remote_shards_leave_no_file_on_local_disk(lfw: Path, s3_bucket: str, s3_server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where a library would spill a download
    monkeypatch.chdir(tmp_path)
    keys, _ = _read(_stream(_shards(lfw, "train", _upload(lfw, s3_bucket)), train=False, workers=0), 0)
    assert len(keys) == 160 and not any(tmp_path.rglob("*"))
