"""Unusual, broken and oddly named inputs, end to end: ImageFolder -> shards -> 1-epoch Ray run -> tables.

One source tree holds everything at once, because that is how bad data arrives: real LFW images plus valid-but-unusual
files (CMYK, 16-bit, grayscale, palette+transparency, RGBA, EXIF-rotated, WebP, BMP) in a class folder named like a
shard (``train-000000.tar``), broken files (corrupt, truncated, zero-byte, text named .jpg, a 20k x 20k PNG bomb
header) in a unicode class folder, under paths with spaces and unicode. The per-file unit checks live in
tests/data/test_images.py; this module reuses its generators and proves the whole pipeline survives them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from senet_dist.artifacts import ArtifactStore
from senet_dist.data import DatasetInfo, LoaderConfig, make_loader
from senet_dist.pipeline import PipelineConfig, train_variant
from tests.data.test_images import _unusual, _write_bad_files
from tests.helpers import PYTHON

from .conftest import tiny_train

pytestmark = [pytest.mark.ray]

SHARD_LIKE = "train-000000.tar"
BROKEN_CLASS = "chats é ü"
RUN_ID = "run 1 with spaces"
SHARD_OPTS = {"resize_shorter": None, "image_format": "png", "max_count": 16, "num_procs": 1, "progress": False}


def _build_tree(lfw_source: Path, root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    shutil.copytree(lfw_source / "face", root / SHARD_LIKE)
    shutil.copytree(lfw_source / "non_face", root / BROKEN_CLASS)
    unusual = _unusual(root / SHARD_LIKE)
    broken = _write_bad_files(root / BROKEN_CLASS)
    return unusual, broken


def _shard_in_subprocess(src: Path, shards: Path, artifacts: Path) -> dict:
    """prepare_dataset in a child process, so its peak RSS measures what the bomb header cost (nothing)."""
    script = textwrap.dedent("""
        import json, resource, sys
        from senet_dist.artifacts import ArtifactStore
        from senet_dist.pipeline import PipelineConfig, prepare_dataset
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the heavy imports (torch, pyarrow)
        cfg = PipelineConfig(data=sys.argv[1], shards=sys.argv[2], artifacts=sys.argv[3], shard=json.loads(sys.argv[4]),
                             variants=["se_resnet_tiny"])
        res = prepare_dataset(cfg, ArtifactStore(cfg.artifacts_abs))
        print(json.dumps({"version_dir": str(res.version_dir), "rejected": res.num_rejected, "counts": res.counts,
                          "extra_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}))
    """)
    proc = subprocess.run(
        [PYTHON, "-c", script, str(src), str(shards), str(artifacts), json.dumps(SHARD_OPTS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def e2e(lfw_source: Path, tmp_path_factory: pytest.TempPathFactory, figures):
    base = tmp_path_factory.mktemp("inputs") / "données d'entrée ü 目录"
    unusual, broken = _build_tree(lfw_source, base / "src dir")
    figures.bad_input("unusual-image", len(unusual))
    figures.bad_input("broken-image", len(broken))
    figures.bad_input("odd-name", 3)  # shard-like class, unicode class, unicode/space paths
    cfg = PipelineConfig(
        data=str(base / "src dir"),
        variants=["se_resnet_tiny"],
        shards=str(base / "shards ü"),
        artifacts=str(base / "artefacts é"),
        train=tiny_train(epochs=1),
        shard=SHARD_OPTS,
    )
    sharded = _shard_in_subprocess(Path(cfg.data), Path(cfg.shards), Path(cfg.artifacts))
    return {
        "cfg": cfg,
        "unusual": unusual,
        "broken": broken,
        "sharded": sharded,
        "version_dir": Path(sharded["version_dir"]),
        "store": ArtifactStore(cfg.artifacts_abs),
    }


def test_broken_files_quarantined_with_reasons_without_memory_blowup(e2e) -> None:
    info = DatasetInfo.load(e2e["version_dir"])
    rejected = {Path(r["path"]).name: r for r in info.rejected().to_pylist()}
    assert set(rejected) == set(e2e["broken"])
    for name, fragment in e2e["broken"].items():
        assert fragment in rejected[name]["reason"], (name, rejected[name]["reason"])
        assert rejected[name]["class_name"] == BROKEN_CLASS
    # a decoded 20000x20000 RGB bomb alone is 1.2 GB; sharding added far less than that to the peak RSS
    assert e2e["sharded"]["extra_rss_kb"] < 400_000, e2e["sharded"]["extra_rss_kb"]


def test_unusual_images_kept_and_decoded_as_rgb(e2e) -> None:
    info = DatasetInfo.load(e2e["version_dir"])
    rows = info.manifest().to_pylist()
    by_path = {r["path"]: r for r in rows}
    unusual = {f"{SHARD_LIKE}/{p.name}" for p in e2e["unusual"].values()}
    assert unusual <= set(by_path), sorted(unusual - set(by_path))
    assert sum(info.counts.values()) == 80 + len(unusual)
    keys = {by_path[p]["key"]: by_path[p]["split"] for p in unusual}
    seen: set[str] = set()
    for split in ("train", "val", "test"):
        loader = make_loader(
            e2e["version_dir"],
            split,
            LoaderConfig(batch_size=4, image_size=32, num_workers=0),
            train=False,
            return_keys=True,
        )
        for images, _, batch_keys in loader:
            assert images.shape[1:] == (3, 32, 32)
            seen |= set(batch_keys) & set(keys)
    assert seen == set(keys)  # every unusual image decodes to a 3-channel tensor


def test_shard_like_class_name_is_a_class_not_a_shard(e2e) -> None:
    info = DatasetInfo.load(e2e["version_dir"])
    assert info.classes == sorted([SHARD_LIKE, BROKEN_CLASS])
    assert (e2e["version_dir"] / "train-000000.tar").is_file()  # the real shard, next to a class of that name
    labels = {r["class_name"]: r["label"] for r in info.manifest().to_pylist()}
    assert labels == {c: i for i, c in enumerate(info.classes)}


@pytest.mark.timeout(300)
def test_one_epoch_run_on_it_records_every_table(e2e, ray_up, figures) -> None:
    cfg, store = e2e["cfg"], e2e["store"]
    summary = train_variant("se_resnet_tiny", e2e["version_dir"], cfg, store, run_id=RUN_ID)
    figures.run_completed()
    assert summary.epochs == 1 and summary.run_id == RUN_ID
    assert (Path(summary.reports) / "confusion_matrix.png").stat().st_size > 0
    (run,) = store.runs_latest().to_pylist()
    assert run["status"] == "completed" and run["epochs_completed"] == 1
    epochs = store.read("epochs").to_pylist()
    ckpts = store.read("checkpoints").to_pylist()
    evals = store.read("evaluations").to_pylist()
    figures.rows(1, len(epochs))
    figures.rows(1, len(evals))
    missing = [c["uri"] for c in ckpts if not (Path(c["uri"]) / "checkpoint.pt").is_file()]
    figures.rows(len(ckpts), len(ckpts) - len(missing))
    assert ckpts and not missing and "artefacts é" in ckpts[0]["uri"]
    assert sum(map(sum, evals[0]["confusion_matrix"])) == DatasetInfo.load(e2e["version_dir"]).counts["test"]
    assert store.read("datasets").num_rows == 1


def test_datasets_row_records_quarantined_count(e2e) -> None:
    (row,) = e2e["store"].read("datasets").to_pylist()
    assert row["num_rejected"] == len(e2e["broken"])
    assert row["uri"] == str(e2e["version_dir"])
