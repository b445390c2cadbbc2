"""Dataset versions on object storage (a real S3 endpoint: moto server on loopback): publish order, no-op reruns,
killed runs, one-line errors for bad locations, and Ray-task sharding that matches the local process pool."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from senet_dist.data import (
    DatasetError,
    DatasetInfo,
    ShardConfig,
    latest_version,
    list_versions,
    shard_dataset,
    sharding_executor,
)
from senet_dist.data.manifest import resolve_version
from senet_dist.data.source import scan_source
from senet_dist.errors import ConfigError, PermanentError
from senet_dist.storage import StorageError, list_files, read_bytes, resolve_filesystem
from senet_dist.train.config import TrainConfig
from tests.helpers import free_port

CFG = {"resize_shorter": None, "image_format": "png", "progress": False, "num_procs": 1, "max_count": 8}
SECRET = "sEcReT-must-not-leak"


@pytest.fixture(scope="module")
def source(lfw_source_factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lfw-subset, 24 faces + 24 non-faces, plus one file that is not an image (it must land in rejected)."""
    src = tmp_path_factory.mktemp("lfw-corrupt") / "lfw"
    shutil.copytree(lfw_source_factory(24), src)
    (src / "face" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really an image")
    return src


def _objects(root: str) -> list[tuple[str, int, object]]:
    """(path, size, mtime) of every object under ``root``: a rerun that writes anything changes this."""
    fs, path = resolve_filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted((i.path, i.size, i.mtime) for i in infos if i.type == pafs.FileType.File)


def test_shard_to_s3_load_and_unchanged_rerun_writes_nothing(source: Path, s3_bucket: str) -> None:
    out = f"s3://{s3_bucket}/shards"
    res = shard_dataset(source, out, ShardConfig(**CFG))
    version = f"v0001-{res.fingerprint[:12]}"
    assert res.changed and res.version_dir == f"{out}/{version}" and res.num_rejected == 1
    assert read_bytes(f"{out}/LATEST").decode().strip() == version
    info = DatasetInfo.load(out)  # the shards root resolves through LATEST
    assert info.version_dir == res.version_dir and info.fingerprint == res.fingerprint
    assert all(p.startswith(f"{out}/{version}/train-") for p in info.shards["train"]) and len(info.shards["train"]) > 1
    files = list_files(out)
    assert {f"{version}/{n}" for ns in res.shards.values() for n in ns} <= set(files)
    assert not [f for f in files if "tmp" in f]  # shards were built locally, only finished ones uploaded
    assert (
        info.manifest().num_rows == sum(res.counts.values())
        and info.rejected().num_rows == res.num_rejected + res.num_ignored == 2
    )
    assert info.rejected().to_pylist()[0]["path"] == "face/zz-broken.png"
    assert sum(n for _, n in info.shard_entries("train")) == res.counts["train"]

    before = _objects(out)
    again = shard_dataset(source, out, ShardConfig(**CFG))
    assert not again.changed and again.version_dir == res.version_dir and again.shards == res.shards
    assert _objects(out) == before  # detected against the remote dataset.json: nothing uploaded again


def test_killed_upload_leaves_no_version_and_rerun_completes(
    source: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import senet_dist.data.publish as publish

    out = f"s3://{s3_bucket}/shards"
    real_upload = publish.upload

    def dies_before_the_tables(local: Path, location: str) -> None:
        if location.endswith("manifest.parquet"):
            raise RuntimeError("killed")
        real_upload(local, location)

    monkeypatch.setattr(publish, "upload", dies_before_the_tables)
    with pytest.raises(RuntimeError, match="killed"):
        shard_dataset(source, out, ShardConfig(**CFG))
    files = list_files(out)
    assert any(f.endswith(".tar") for f in files)  # the shards were uploaded...
    assert "LATEST" not in files and not any(f.endswith(("dataset.json", ".parquet")) for f in files)
    assert list_versions(out) == [] and latest_version(out) is None  # ...but no version is visible
    with pytest.raises(DatasetError, match="no LATEST"):
        resolve_version(out)

    monkeypatch.setattr(publish, "upload", real_upload)
    res = shard_dataset(source, out, ShardConfig(**CFG))
    assert res.changed and res.version_dir.endswith(f"/v0001-{res.fingerprint[:12]}")  # the unlisted one, reused
    assert latest_version(out) == res.version_dir and DatasetInfo.load(out).counts == res.counts


def _one_line(exc: BaseException, *absent: str) -> str:
    text = str(exc)
    assert "\n" not in text and all(a not in text for a in absent), text
    return text


def test_bad_locations_give_one_line_each(s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError) as no_version:
        resolve_version(f"s3://{s3_bucket}/nothing")
    assert "no LATEST" in _one_line(no_version.value)

    endpoint = s3_server.endpoint.split("://", 1)[1]
    query = f"scheme=http&endpoint_override={endpoint}&region=us-east-1"
    with pytest.raises(StorageError) as no_bucket:  # settings in the URI's query string: never in the message
        resolve_version(f"s3://{s3_bucket}-missing/shards?{query}")
    assert no_bucket.value.kind == "no_bucket"
    assert "bucket does not exist" in _one_line(no_bucket.value, "endpoint_override", "?")

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StorageError) as unreachable:
        resolve_version(f"s3://{s3_bucket}/shards")
    assert unreachable.value.kind == "unreachable" and "unreachable" in _one_line(unreachable.value)
    assert not isinstance(unreachable.value, PermanentError)  # an outage or a typo: the flow retries once


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory: pytest.TempPathFactory):
    """A second moto server that checks credentials (moto's IAM auth on from the first request)."""
    from tests.s3server import start_server, stop_server

    server, proc = start_server(
        tmp_path_factory.mktemp("moto-auth") / "server.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    )
    try:
        yield server
    finally:
        stop_server(proc)


def test_wrong_credentials_one_line_without_the_secret(auth_s3, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in auth_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(StorageError) as denied:
        resolve_version("s3://some-bucket/shards")
    assert denied.value.kind == "access_denied"
    assert "access denied" in _one_line(denied.value, SECRET, "AKIAWRONG")
    with pytest.raises(ConfigError) as via_config:  # what fit() and `senet-dist train` run before any worker
        TrainConfig().validate("s3://some-bucket/shards")
    assert "access denied" in _one_line(via_config.value, SECRET)
    with pytest.raises(StorageError) as source:  # an ImageFolder source in the same store: before any hashing
        scan_source("s3://some-bucket/photos")
    assert source.value.kind == "access_denied" and "access denied" in _one_line(source.value, SECRET)


def test_train_config_validate_refuses_a_uri_without_a_version(s3_bucket: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig().validate(f"s3://{s3_bucket}/nothing")
    assert f"s3://{s3_bucket}/nothing is not a dataset version" in _one_line(err.value)


def test_sharding_executor_needs_a_cluster_and_remote_locations() -> None:
    assert sharding_executor("s3://b/photos", "s3://b/shards", ray_is_cluster=True) == "ray"
    assert sharding_executor("s3://b/photos", "s3://b/shards", ray_is_cluster=False) == "processes"
    assert sharding_executor("/data/photos", "s3://b/shards", ray_is_cluster=True) == "processes"
    assert sharding_executor("s3://b/photos", "file:///tmp/shards", ray_is_cluster=True) == "processes"


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_ray_tasks_and_process_pool_write_the_same_version(ray_up, source: Path, s3_bucket: str, tmp_path) -> None:
    cfg = ShardConfig(**CFG)
    local = shard_dataset(source, tmp_path / "local", cfg)  # processes, local OUT
    on_ray = shard_dataset(source, f"s3://{s3_bucket}/ray", cfg, executor="ray")  # one task per group, uploads
    ray_local = shard_dataset(source, tmp_path / "ray-local", cfg, executor="ray")  # tasks write the build dir
    infos = [DatasetInfo.load(r.version_dir) for r in (local, on_ray, ray_local)]
    assert len({i.fingerprint for i in infos}) == 1 and len(local.shards["train"]) >= 3  # several groups
    rows = [sorted(i.manifest().to_pylist(), key=lambda r: r["key"]) for i in infos]
    assert rows[0] == rows[1] == rows[2]
    assert infos[0].shard_counts == infos[1].shard_counts == infos[2].shard_counts
    assert infos[0].raw["shards"] == infos[1].raw["shards"] == infos[2].raw["shards"]
    assert infos[0].rejected().to_pylist() == infos[1].rejected().to_pylist() == infos[2].rejected().to_pylist()
    for name in infos[0].raw["shards"]["train"]:  # identical bytes: shards are deterministic (mtime 0)
        assert (Path(local.version_dir) / name).read_bytes() == read_bytes(f"{on_ray.version_dir}/{name}")
