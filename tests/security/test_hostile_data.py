"""Data a stranger could have written: a shard whose label names no class, a shard with an oversize member, a
``dataset.json`` naming shards outside its version, and object names with ``//`` or ``..`` in an S3 ImageFolder.
Each is one clear error (or a skipped entry with its reason), never a crash or a read outside the dataset root."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from senet_dist.cli import app
from senet_dist.data import DatasetError, DatasetInfo, LoaderConfig, ShardReadError, make_loader
from senet_dist.data.stream import MAX_MEMBER_BYTES

runner = CliRunner()


@pytest.fixture
def version_copy(lfw_shards_factory, tmp_path) -> Path:
    """A private copy of a real lfw version (all 200 images) whose files a test may tamper with."""
    real = lfw_shards_factory(None, max_count=50)
    dst = tmp_path / "shards" / real.name
    shutil.copytree(real, dst)
    (dst.parent / "LATEST").write_text(real.name + "\n")
    return dst


def rewrite_shard(path: Path, change) -> None:
    """Rewrite a tar shard member by member through ``change(name, data) -> (name, data)``."""
    members = []
    with tarfile.open(path) as tar:
        for info in tar:
            members.append((info.name, tar.extractfile(info).read()))
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            name, data = change(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_label_outside_the_classes_is_one_clear_error(version_copy):
    test_shard = next(version_copy.glob("test-*.tar"))
    rewrite_shard(test_shard, lambda name, data: (name, b"7" if name.endswith(".cls") else data))
    with pytest.raises(ShardReadError, match=r"has label 7, outside the dataset's 2 classes \(0\.\.1\)"):
        list(make_loader(version_copy, "test", LoaderConfig(batch_size=8, image_size=32, num_workers=0)))
    rewrite_shard(test_shard, lambda name, data: (name, b"cat" if name.endswith(".cls") else data))
    with pytest.raises(ShardReadError, match="has label 'cat', not a class index"):
        list(make_loader(version_copy, "test", LoaderConfig(batch_size=8, image_size=32, num_workers=0)))


def test_evaluate_on_a_tampered_shard_is_one_line(version_copy, lfw_checkpoint):
    test_shard = next(version_copy.glob("test-*.tar"))
    rewrite_shard(test_shard, lambda name, data: (name, b"-1" if name.endswith(".cls") else data))
    result = runner.invoke(app, ["evaluate", str(lfw_checkpoint[0]), "--data", str(version_copy)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "has label -1, outside the dataset's 2 classes" in lines[0]


def test_an_oversize_member_is_refused_before_it_is_read(version_copy):
    """A member whose header claims more than the limit: refused from the header, its bytes never read into memory."""
    shard = next(version_copy.glob("val-*.tar"))
    info = tarfile.TarInfo("s0000.jpg")
    info.size = MAX_MEMBER_BYTES + 1
    shard.write_bytes(info.tobuf() + b"\0" * 4096)  # the header, and far less data than it claims
    with pytest.raises(ShardReadError, match="over the .*-byte limit for one sample entry"):
        list(make_loader(version_copy, "val", LoaderConfig(batch_size=8, image_size=32, num_workers=0)))


@pytest.mark.parametrize("name", ["../../elsewhere/x.tar", "/etc/passwd", "s3://other-bucket/x.tar", ".hidden.tar"])
def test_a_dataset_json_naming_shards_outside_its_version_is_refused(version_copy, name):
    meta = json.loads((version_copy / "dataset.json").read_text())
    meta["shards"]["train"][0] = name
    (version_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="not a .tar file in the version"):
        DatasetInfo.load(version_copy)


def test_object_names_with_empty_or_dot_segments_are_skipped_with_their_reason(s3_bucket, lfw_source_factory, tmp_path):
    """S3 keys may hold ``//`` and ``..``; as path segments they would name other files: skipped, listed, never read."""
    import os

    import boto3

    from senet_dist.data import ShardConfig, shard_dataset
    from senet_dist.storage import upload_dir

    src = f"s3://{s3_bucket}/photos"
    upload_dir(lfw_source_factory(8), src)
    image = next(p for p in lfw_source_factory(8).rglob("*.png")).read_bytes()
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    for key in ("face//double.png", "face/../escape.png", "face/./dot.png"):  # pyarrow refuses to write these
        s3.put_object(Bucket=s3_bucket, Key=f"photos/{key}", Body=image)
    result = shard_dataset(src, tmp_path / "shards", ShardConfig(progress=False, num_procs=1, max_count=10))
    rejected = DatasetInfo.load(result.version_dir).rejected().to_pylist()
    unsafe = {r["path"] for r in rejected if r["reason"].startswith("unsafe name")}
    assert unsafe == {"face//double.png", "face/../escape.png", "face/./dot.png"}
    assert sum(result.counts.values()) == 16  # the 16 real images, nothing else
