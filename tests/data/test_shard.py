"""shard_dataset: layout, manifest, fingerprint, no-op reruns, new versions, bad trees."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from senet_dist.data import DatasetError, DatasetInfo, ShardConfig, fingerprint_source, latest_version, shard_dataset
from tests.helpers import make_tree, wait_until, write_image

CFG = dict(progress=False, num_procs=1)


def test_layout_manifest_and_dataset_json(small_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = shard_dataset(small_tree, out, ShardConfig(max_count=5, resize_shorter=20, **CFG))
    vdir = Path(res.version_dir)
    assert res.changed and vdir.name == f"v0001-{res.fingerprint[:12]}"
    assert (out / "LATEST").read_text().strip() == vdir.name
    assert latest_version(out) == res.version_dir
    assert sum(res.counts.values()) == 22 and res.num_rejected == 0
    assert all(res.counts[s] >= 2 for s in ("val", "test"))
    manifest = pq.read_table(vdir / "manifest.parquet")
    assert manifest.column_names[:10] == [
        "key",
        "path",
        "class_name",
        "label",
        "split",
        "shard",
        "bytes",
        "sha256",
        "width",
        "height",
    ]
    rows = manifest.to_pylist()
    assert len({r["key"] for r in rows}) == 22 and not any("." in r["key"] for r in rows)
    assert {r["class_name"]: r["label"] for r in rows} == {"cats": 0, "dogs ü": 1}
    assert all(r["path"].startswith(("cats/", "dogs ü/")) and (r["width"], r["height"]) == (40, 30) for r in rows)
    assert all(min(r["stored_width"], r["stored_height"]) == 20 for r in rows)
    info = DatasetInfo.load(res.version_dir)
    assert info.classes == ["cats", "dogs ü"] and info.num_classes == 2 and info.counts == res.counts
    assert len(info.shards["train"]) == -(-res.counts["train"] // 5)
    assert all(Path(p).is_file() for p in info.shards["train"])
    # every manifest row is in the shard it names, as {key}.jpg + {key}.cls
    for split, paths in info.shards.items():
        for p in paths:
            with tarfile.open(p) as tf:
                names = set(tf.getnames())
            for r in (r for r in rows if r["shard"] == Path(p).name):
                assert {f"{r['key']}.jpg", f"{r['key']}.cls"} <= names and r["split"] == split
    meta = json.loads((vdir / "dataset.json").read_text())
    assert meta["fingerprint"] == res.fingerprint and meta["version"] == vdir.name
    assert pq.read_table(vdir / "rejected.parquet").num_rows == 0


def test_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": 30, "b": 20})
    cfg = ShardConfig(fractions=(0.6, 0.2, 0.2), **CFG)
    r1 = shard_dataset(src, tmp_path / "o1", cfg)
    r2 = shard_dataset(src, tmp_path / "o2", cfg)
    m1, m2 = (DatasetInfo.load(r.version_dir).manifest().to_pylist() for r in (r1, r2))
    assert {(r["path"], r["split"]) for r in m1} == {(r["path"], r["split"]) for r in m2}
    per = {(r["class_name"], r["split"]): 0 for r in m1}
    for r in m1:
        per[(r["class_name"], r["split"])] += 1
    assert per == {
        ("a", "train"): 18,
        ("a", "val"): 6,
        ("a", "test"): 6,
        ("b", "train"): 12,
        ("b", "val"): 4,
        ("b", "test"): 4,
    }
    r3 = shard_dataset(src, tmp_path / "o3", ShardConfig(fractions=(0.6, 0.2, 0.2), seed=1, **CFG))
    m3 = DatasetInfo.load(r3.version_dir).manifest().to_pylist()
    assert {(r["path"], r["split"]) for r in m3} != {(r["path"], r["split"]) for r in m1}


def test_rerun_is_noop_and_change_makes_new_version(small_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = ShardConfig(**CFG)
    first = shard_dataset(small_tree, out, cfg)
    assert fingerprint_source(small_tree, cfg) == first.fingerprint
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = shard_dataset(small_tree, out, cfg)
    assert not again.changed and again.version_dir == first.version_dir
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # wrote nothing
    v1_files = {p.name: p.read_bytes() for p in Path(first.version_dir).iterdir()}
    write_image(small_tree / "cats" / "img 000.jpg", seed=999)  # content change, same path
    assert fingerprint_source(small_tree, cfg) != first.fingerprint
    second = shard_dataset(small_tree, out, cfg)
    assert second.changed and Path(second.version_dir).name.startswith("v0002-")
    assert latest_version(out) == second.version_dir
    assert {p.name: p.read_bytes() for p in Path(first.version_dir).iterdir()} == v1_files
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_config_change_changes_fingerprint(small_tree: Path) -> None:
    base = fingerprint_source(small_tree, ShardConfig(**CFG))
    assert fingerprint_source(small_tree, ShardConfig(resize_shorter=128, **CFG)) != base
    assert fingerprint_source(small_tree, ShardConfig(seed=3, **CFG)) != base
    assert fingerprint_source(small_tree, ShardConfig(num_procs=2, progress=True)) == base


def test_crash_mid_write_leaves_no_version(small_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import senet_dist.data.shard as shard_mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shard_mod, "write_json", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        shard_dataset(small_tree, out, ShardConfig(**CFG))
    assert latest_version(out) is None and not (out / "LATEST").exists()
    assert [p.name for p in out.iterdir() if not p.name.startswith(".hash")] == []


def test_shard_like_class_names_and_predefined_split(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src / "train", {"train-000000.tar": 10, "b": 10})
    make_tree(src / "test", {"train-000000.tar": 3, "b": 2})
    res = shard_dataset(src, tmp_path / "out", ShardConfig(**CFG))
    info = DatasetInfo.load(res.version_dir)
    assert info.classes == ["b", "train-000000.tar"] and info.raw["split_mode"] == "predefined"
    rows = info.manifest().to_pylist()
    assert {r["path"] for r in rows if r["split"] == "test"} == {
        r["path"] for r in rows if r["path"].startswith("test/")
    }
    assert info.counts["test"] == 5 and info.counts["val"] == 2 and info.counts["train"] == 18
    # opting out: train/ and test/ are the classes, each holding every image below it (torchvision's ImageFolder)
    flat = DatasetInfo.load(shard_dataset(src, tmp_path / "out2", ShardConfig(split_mode="random", **CFG)).version_dir)
    assert flat.classes == ["test", "train"] and sum(flat.counts.values()) == 25
    assert {r["path"].split("/")[0] for r in flat.manifest().to_pylist() if r["class_name"] == "test"} == {"test"}


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda s: None, "does not exist"),
        (lambda s: s.mkdir(), "no class folders"),
        (lambda s: (make_tree(s, {"a": 5}), (s / "empty").mkdir()), "no images.*empty"),
        (lambda s: make_tree(s, {"a": 5, "b": 2}), "class 'b' has 2"),
    ],
)
def test_bad_trees_raise_before_writing(tmp_path: Path, setup, match: str) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    setup(src)
    with pytest.raises(DatasetError, match=match):
        shard_dataset(src, out, ShardConfig(**CFG))
    assert not out.exists()


def test_bad_fractions_and_shorthand() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        ShardConfig(fractions=(0.8, 0.1, 0.2))
    assert ShardConfig(val_frac=0.2, test_frac=0.1).fractions == pytest.approx((0.7, 0.2, 0.1))
    assert (
        ShardConfig(val_frac=0.2, test_frac=0.1).fingerprint_config()
        == ShardConfig(fractions=(0.7, 0.2, 0.1)).fingerprint_config()
    )
    with pytest.raises(ValueError, match="train fraction"):
        ShardConfig(val_frac=0.5, test_frac=0.5)


def test_nested_images_keep_their_class_and_strays_are_listed_in_rejected(small_tree: Path, tmp_path: Path) -> None:
    (small_tree / "top.jpg").write_bytes(b"x")
    (small_tree / "cats" / "notes.txt").write_text("hi")
    (small_tree / "cats" / ".hidden.jpg").write_bytes(b"xyz")
    write_image(small_tree / "dogs ü" / "patient 7" / "visit 2" / "deep.jpg", seed=77)
    (small_tree / "cats" / "broken.jpg").write_bytes(b"not a jpeg")
    res = shard_dataset(small_tree, tmp_path / "out", ShardConfig(**CFG))
    assert res.num_ignored == 3 and sum(res.counts.values()) == 23 and res.num_rejected == 1
    rows = {r["path"]: r for r in DatasetInfo.load(res.version_dir).manifest().to_pylist()}
    deep = rows["dogs ü/patient 7/visit 2/deep.jpg"]
    assert (deep["class_name"], deep["label"]) == ("dogs ü", 1)
    table = DatasetInfo.load(res.version_dir).rejected().to_pylist()
    rejected = {r["path"]: (r["class_name"], r["reason"], r["bytes"]) for r in table}
    assert rejected == {
        "top.jpg": ("", "outside any class folder", 1),
        "cats/notes.txt": ("cats", "not an image file (.txt)", 2),
        "cats/.hidden.jpg": ("cats", "hidden file", 3),
        "cats/broken.jpg": ("cats", "not an image (unidentified format)", 10),
    }
    assert DatasetInfo.load(res.version_dir).raw["num_ignored"] == 3


def test_parallel_encoding_matches_serial(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": 40, "b": 40})
    serial = shard_dataset(src, tmp_path / "o1", ShardConfig(progress=False, num_procs=1))
    parallel = shard_dataset(src, tmp_path / "o2", ShardConfig(progress=False, num_procs=2))
    assert serial.fingerprint == parallel.fingerprint
    tars = [sorted(Path(r.version_dir).glob("*.tar")) for r in (serial, parallel)]
    for a, b in zip(*tars, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_info_from_root_hash_cache_and_progress_bar(small_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = shard_dataset(small_tree, out, ShardConfig(num_procs=1, progress=True))
    assert DatasetInfo.load(out).version_dir == res.version_dir  # a shards root resolves through LATEST
    cache = json.loads((out / ".hash-cache.json").read_text())
    assert len(cache["files"]) == 22
    rows = {r["path"]: r["sha256"] for r in DatasetInfo.load(out).manifest().to_pylist()}
    assert all(cache["files"][p][2] == digest for p, digest in rows.items())
    assert fingerprint_source(small_tree, ShardConfig(), cache_path=out / ".hash-cache.json") == res.fingerprint
    with pytest.raises(DatasetError, match="not a dataset version"):
        DatasetInfo.load(tmp_path)


def test_max_bytes_rotates_shards(small_tree: Path, tmp_path: Path) -> None:
    res = shard_dataset(small_tree, tmp_path / "out", ShardConfig(max_bytes=6000, **CFG))
    info = DatasetInfo.load(res.version_dir)
    assert len(info.shards["train"]) > 1 and sum(n for _, n in info.shard_entries("train")) == res.counts["train"]
    assert all(Path(p).stat().st_size <= 6000 + 3 * 1024 or n == 1 for p, n in info.shard_entries("train"))
    names = [Path(p).name for p in info.shards["train"]]  # byte rotation inside group 0: -01, -02, ...
    assert names[:3] == ["train-000000.tar", "train-000000-01.tar", "train-000000-02.tar"]


def test_next_run_removes_the_build_a_killed_run_left(small_tree: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from senet_dist.data.publish import BUILD_PREFIX, host

    out = tmp_path / "out"
    # A real shard run, SIGKILLed while its build dir exists (it blocks just before publishing).
    code = (
        "import sys, time; import senet_dist.data.shard as m; from senet_dist.data import ShardConfig\n"
        "m.write_json = lambda *a, **k: time.sleep(600)\n"
        f"m.shard_dataset(sys.argv[1], sys.argv[2], ShardConfig(**{CFG!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(small_tree), str(out)])
    wait_until(
        lambda: list(out.glob(f"{BUILD_PREFIX}*/manifest.parquet")),
        120,
        "the shard subprocess's build dir",
        interval=0.05,
        proc=proc,
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (stale,) = out.glob(f"{BUILD_PREFIX}*")
    live = out / f"{BUILD_PREFIX}{host()}-{os.getpid()}-live"  # a concurrent run in a live process
    foreign = out / f"{BUILD_PREFIX}otherhost-{proc.pid}-x"  # another host on a shared filesystem
    live.mkdir()
    foreign.mkdir()

    result = shard_dataset(small_tree, out, ShardConfig(**CFG))
    assert result.changed and latest_version(out) == result.version_dir
    assert not stale.exists() and live.exists() and foreign.exists()
