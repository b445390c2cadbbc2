"""scan_source: torchvision ImageFolder semantics, every skipped entry with its reason, local folders and S3 alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from senet_dist import storage
from senet_dist.data import DatasetInfo, EncodeConfig, ShardConfig, fingerprint_source, process_image, shard_dataset
from senet_dist.data.images import IMAGE_EXTS, Rejected
from senet_dist.data.source import NOT_IN_SPLIT, OUTSIDE_CLASS, DatasetError, Skipped, scan_source
from senet_dist.errors import is_retryable
from tests.helpers import free_port, make_tree, write_image

if TYPE_CHECKING:
    from tests.s3server import S3Server

CFG = dict(progress=False, num_procs=1)
MANIFEST_COLUMNS = ("key", "path", "label", "split", "sha256", "shard")


def _patients(root: Path, patients: dict[str, int] | None = None, per_patient: int = 4) -> Path:
    """``<class>/<patient>/<image>`` (how medical sets arrive), plus one image two levels deeper, upper-case .PNG."""
    seed = 0
    for cls, n in (patients or {"benign": 3, "malignant ü": 2}).items():
        for p in range(n):
            for i in range(per_patient):
                write_image(root / cls / f"patient {p}" / f"img {i}.jpg", (20, 15), seed)
                seed += 1
    write_image(root / "benign" / "patient 0" / "scan" / "deep.PNG", (20, 15), 999, fmt="PNG")
    return root


def _strays(root: Path) -> list[Skipped]:
    """Entries that are not samples, and the ``Skipped`` each must become (sorted by rel)."""
    (root / "top.jpg").write_bytes(b"x" * 3)
    (root / "benign" / "notes.txt").write_text("hi")
    (root / "benign" / "patient 1" / "README").write_text("read me")
    (root / "malignant ü" / ".DS_Store").write_bytes(b"\0" * 10)
    hidden = [write_image(root / "malignant ü" / ".ipynb_checkpoints" / f"{n}.jpg", seed=7) for n in "ab"]
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return [
        Skipped(".git/", "hidden folder", "", 7),
        Skipped("benign/notes.txt", "not an image file (.txt)", "benign", 2),
        Skipped("benign/patient 1/README", "not an image file (no extension)", "benign", 7),
        Skipped("malignant ü/.DS_Store", "hidden file", "malignant ü", 10),
        Skipped(
            "malignant ü/.ipynb_checkpoints/", "hidden folder", "malignant ü", sum(p.stat().st_size for p in hidden)
        ),
        Skipped("top.jpg", OUTSIDE_CLASS, "", 3),
    ]


def test_classes_and_samples_match_torchvision_imagefolder(tmp_path: Path) -> None:
    from torchvision.datasets.folder import find_classes, make_dataset

    root = _patients(tmp_path / "src")
    (root / "benign" / "notes.txt").write_text("not an image")
    (root / "top.jpg").write_bytes(b"outside every class")
    tree = scan_source(root)
    classes, class_to_idx = find_classes(str(root))
    expected = make_dataset(str(root), class_to_idx, extensions=tuple(IMAGE_EXTS))
    assert tree.classes == classes == ["benign", "malignant ü"]
    assert sorted((f.rel, f.label) for f in tree.files) == sorted(
        (Path(p).relative_to(root).as_posix(), i) for p, i in expected
    )
    assert len(tree.files) == 21 and "benign/patient 0/scan/deep.PNG" in {f.rel for f in tree.files}
    assert all(f.size == (root / f.rel).stat().st_size for f in tree.files)  # from the listing, no stat later


def test_every_unused_entry_is_skipped_with_its_reason(tmp_path: Path) -> None:
    root = _patients(tmp_path / "src")
    expected = _strays(root)
    tree = scan_source(root)
    assert tree.skipped == expected
    assert len(tree.files) == 21 and tree.root == str(root.resolve())


def test_predefined_split_walks_class_folders_and_skips_misplaced_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src / "train", {"a": 6, "b": 6})
    make_tree(src / "test", {"a": 2, "b": 2})
    write_image(src / "train" / "a" / "day 2" / "deep.jpg", seed=50)
    write_image(src / "train" / "loose.jpg", seed=51)
    (src / "notes.md").write_text("about this set")
    tree = scan_source(src)
    assert tree.mode == "predefined" and tree.classes == ["a", "b"]
    deep = next(f for f in tree.files if f.rel == "train/a/day 2/deep.jpg")
    assert (deep.class_name, deep.label, deep.fixed_split) == ("a", 0, "train")
    assert [(s.rel, s.reason) for s in tree.skipped] == [("notes.md", NOT_IN_SPLIT), ("train/loose.jpg", OUTSIDE_CLASS)]


def _manifest(version_dir: Path) -> list[tuple]:
    rows = DatasetInfo.load(version_dir).manifest().to_pylist()
    return sorted(tuple(r[c] for c in MANIFEST_COLUMNS) for r in rows)


def test_s3_source_gives_the_local_fingerprint_manifest_and_rejected_rows(tmp_path: Path, s3_bucket: str) -> None:
    src = _patients(tmp_path / "src", {"benign": 5, "malignant ü": 4}, per_patient=8)  # 73 images: the process pool
    _strays(src)
    (src / "benign" / "patient 2" / "broken.jpg").write_bytes(b"not a jpeg")
    uri = f"s3://{s3_bucket}/photos"
    storage.upload_dir(src, uri)
    local, remote = scan_source(src), scan_source(uri)
    assert remote.root == uri and remote.location("benign/notes.txt") == f"{uri}/benign/notes.txt"
    assert [(f.rel, f.label, f.size) for f in remote.files] == [(f.rel, f.label, f.size) for f in local.files]
    assert remote.skipped == local.skipped and remote.classes == local.classes
    cfg = ShardConfig(max_count=10, **CFG)
    assert fingerprint_source(uri, cfg) == fingerprint_source(src, cfg)

    a = shard_dataset(src, tmp_path / "local-out", cfg)
    b = shard_dataset(uri, tmp_path / "s3-out", ShardConfig(max_count=10, progress=False, num_procs=2))
    assert a.fingerprint == b.fingerprint and a.counts == b.counts and sum(a.counts.values()) == 73
    assert _manifest(a.version_dir) == _manifest(b.version_dir)
    for name in DatasetInfo.load(a.version_dir).raw["shard_counts"]:
        assert (Path(a.version_dir) / name).read_bytes() == (Path(b.version_dir) / name).read_bytes(), name
    ra, rb = (sorted(DatasetInfo.load(r.version_dir).rejected().to_pylist(), key=lambda r: r["path"]) for r in (a, b))
    assert ra == rb and len(ra) == 7 and (b.num_rejected, b.num_ignored) == (1, 6)
    assert DatasetInfo.load(b.version_dir).raw["source"] == uri


def test_hash_cache_works_on_s3_from_the_listing(tmp_path: Path, s3_bucket: str) -> None:
    src = make_tree(tmp_path / "src", {"a": 4, "b": 4})
    uri = f"s3://{s3_bucket}/photos"
    storage.upload_dir(src, uri)
    cache = tmp_path / "hash-cache.json"
    cfg = ShardConfig(**CFG)
    fp = fingerprint_source(uri, cfg, cache_path=cache)
    data = json.loads(cache.read_text())
    assert data["root"] == uri and len(data["files"]) == 8
    data["files"]["a/img 000.jpg"][2] = "0" * 64  # a hit (same size and mtime in the listing) is trusted, not read
    cache.write_text(json.dumps(data))
    assert fingerprint_source(uri, cfg, cache_path=cache) != fp
    write_image(src / "a" / "img 000.jpg", (41, 30), seed=0)  # a new size in the listing: hashed again
    storage.upload_dir(src, uri)
    assert fingerprint_source(uri, cfg, cache_path=cache) == fingerprint_source(src, cfg) != fp


def test_s3_errors_are_one_line_and_never_show_the_query(s3_bucket: str, s3_server: S3Server) -> None:
    with pytest.raises(DatasetError, match="source directory does not exist: s3://.*/nothing-here$"):
        scan_source(f"s3://{s3_bucket}/nothing-here")
    host = s3_server.endpoint.split("://", 1)[1]
    query = f"scheme=http&region=us-east-1&endpoint_override={host}"
    with pytest.raises(DatasetError, match="does not exist") as missing:
        scan_source(f"s3://{s3_bucket}/nope?{query}")
    with pytest.raises(DatasetError, match="cannot resolve") as bad:
        scan_source(f"s3://{s3_bucket}/photos?{query}&secret_key=SeCrEt42")
    for err in (missing, bad):
        assert host not in str(err.value) and "SeCrEt42" not in str(err.value) and "\n" not in str(err.value)
    gone = process_image(f"s3://{s3_bucket}/photos/missing.jpg", EncodeConfig())
    assert isinstance(gone, Rejected) and gone.reason.startswith("unreadable")


def test_odd_object_names_on_s3(tmp_path: Path, s3_bucket: str) -> None:
    src = make_tree(tmp_path / "src", {"a": 3, "b #1": 3})
    write_image(src / "a" / "what?.jpg", seed=40)
    write_image(src / "a" / "50% off.jpg", seed=41)
    uri = f"s3://{s3_bucket}/photos"
    storage.upload_dir(src, uri)
    tree = scan_source(uri)
    assert [(s.rel, s.reason) for s in tree.skipped] == [
        ("a/what?.jpg", "name contains '?' (not addressable in a URI)")
    ]
    assert {"a/50% off.jpg", "b #1/img 000.jpg"} <= {f.rel for f in tree.files} and tree.classes == ["a", "b #1"]
    res = shard_dataset(uri, tmp_path / "out", ShardConfig(**CFG))  # "#" and "%" are read as part of the name
    assert res.num_rejected == 0 and sum(res.counts.values()) == 7


def test_an_unreachable_store_fails_the_run_instead_of_rejecting_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network error is not a property of the image: quarantining it would drop a good sample from the version."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(OSError, match="NETWORK_CONNECTION") as read:
        process_image("s3://bucket/photos/cats/a.jpg", EncodeConfig())
    with pytest.raises(OSError, match="storage endpoint unreachable") as scan:  # one line: StorageUnreachableError
        scan_source("s3://bucket/photos")
    assert is_retryable(read.value) and is_retryable(scan.value)  # the flow runs the step again
