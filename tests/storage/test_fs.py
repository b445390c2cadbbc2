"""senet_dist.storage: path/URI resolution and directory trees copied to and from a real S3 endpoint."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from senet_dist import storage


def _make_tree(root: Path) -> dict[str, bytes]:
    """Real tar shards plus a nested checkpoint directory; returns {relative path: bytes}."""
    rng = __import__("random").Random(0)
    files: dict[str, bytes] = {}
    for i in range(3):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for j in range(4):
                payload = rng.randbytes(1000 + 97 * j)
                info = tarfile.TarInfo(f"sample{i:02d}{j:02d}.png")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        files[f"v0001-abc/train-{i:06d}.tar"] = buf.getvalue()
    files["checkpoint_000001/model.pt"] = rng.randbytes(300_000)
    files["checkpoint_000001/meta/state.json"] = b'{"epoch": 1}'
    files["checkpoint_000001/empty.bin"] = b""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_join_local_and_uri() -> None:
    assert storage.join("/a/b", "c", "d.parquet") == os.path.join("/a/b", "c", "d.parquet")
    assert storage.join("s3://bkt/prefix/", "runs", "/x.parquet") == "s3://bkt/prefix/runs/x.parquet"
    assert storage.join("s3://bkt", "runs") == "s3://bkt/runs"
    assert (
        storage.join("s3://bkt/p?endpoint_override=h:9000&scheme=http", "runs")
        == "s3://bkt/p/runs?endpoint_override=h:9000&scheme=http"
    )


def test_resolve_local_relative_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve_filesystem("store")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "store")
    assert storage.is_local("store") and storage.is_local("file:///x") and not storage.is_local("s3://b/p")


def test_s3_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(key, raising=False)
    assert storage.s3_options_from_env() == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert storage.s3_options_from_env() == {
        "endpoint_override": "minio.local:9000",
        "scheme": "http",
        "region": "us-east-1",
        "access_key": "k",
        "secret_key": "s",
    }
    fs, path = storage.resolve_filesystem("s3://bkt/some/prefix/")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bkt/some/prefix"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "ftp://nope")
    with pytest.raises(ValueError, match="http"):
        storage.s3_options_from_env()
    with pytest.raises(ValueError, match="bucket"):
        storage.resolve_filesystem("s3:///prefix")


def test_local_tree_copy_and_missing_source(tmp_path: Path) -> None:
    files = _make_tree(tmp_path / "src")
    copied = storage.copy_tree(tmp_path / "src", tmp_path / "dst")
    assert copied == sorted(files)
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    with pytest.raises(FileNotFoundError, match="nothere"):
        storage.upload_dir(tmp_path / "nothere", str(tmp_path / "x"))


def test_s3_upload_download_tree_byte_for_byte(tmp_path: Path, s3_bucket: str) -> None:
    files = _make_tree(tmp_path / "src")
    uri = f"s3://{s3_bucket}/runs/r1"
    assert storage.upload_dir(tmp_path / "src", uri) == sorted(files)
    assert storage.list_files(uri) == sorted(files)
    got = storage.download_dir(uri, tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in got) == sorted(files)
    for rel, data in files.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
    # a sub-tree (one checkpoint) downloads on its own
    storage.download_dir(storage.join(uri, "checkpoint_000001"), tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.pt").read_bytes() == files["checkpoint_000001/model.pt"]
    assert storage.list_files(f"s3://{s3_bucket}/absent") == []


def test_s3_small_objects(s3_bucket: str) -> None:
    uri = storage.join(f"s3://{s3_bucket}", "shards", "LATEST")
    storage.write_bytes(uri, b"v0002-deadbeef\n")
    assert storage.read_bytes(uri) == b"v0002-deadbeef\n"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(f"s3://{s3_bucket}", "shards", "MISSING"))


def test_storage_env_ships_the_settings_and_the_keys_only_on_opt_in(monkeypatch):
    from senet_dist.storage import SHIP_STORAGE_ENV, storage_env

    monkeypatch.delenv(SHIP_STORAGE_ENV, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t0ken")
    monkeypatch.setenv("HOME_NOT_AWS", "x")
    shipped = storage_env()
    assert shipped["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and "HOME_NOT_AWS" not in shipped
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(shipped)  # the default
    monkeypatch.setenv(SHIP_STORAGE_ENV, "1")  # the operator's explicit choice: the driver's keys go along
    assert storage_env()["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"


def test_a_filesystem_for_other_nodes_carries_no_keys(monkeypatch):
    """What Ray Train pickles into its workers: the endpoint, never the keys (they come from each node)."""
    import pickle

    from senet_dist.storage import resolve_filesystem

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    bare, path = resolve_filesystem("s3://bucket/runs", keys=False)
    assert path == "bucket/runs" and b"s3cr3t" not in pickle.dumps(bare) and b"AKIA-KEY" not in pickle.dumps(bare)
    assert b"s3cr3t" in pickle.dumps(resolve_filesystem("s3://bucket/runs")[0])  # the driver's own keeps them
    named, path = resolve_filesystem("s3://U%3Aser:p%40ss@bucket/runs")  # keys in the URI (URL-encoded)
    assert path == "bucket/runs" and b"p@ss" in pickle.dumps(named)
    assert b"p@ss" not in pickle.dumps(resolve_filesystem("s3://U:p%40ss@bucket/runs", keys=False)[0])
