"""An unwritable or full artifacts root: a clear error naming it, and the tables written before stay intact.

We run as root, so permission bits do not stop us: "unwritable" is a root *under a regular file* (ENOTDIR), and "disk
full" is RLIMIT_FSIZE in a child process (EFBIG, what a full disk looks like to a writer). Store-level versions of both
are in tests/test_artifacts.py; these go through the pipeline functions a flow calls.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from senet_dist.artifacts import ArtifactStore, ArtifactStoreError
from senet_dist.pipeline import PipelineConfig, prepare_dataset, train_variant
from tests.helpers import PYTHON

from .conftest import tiny_train


def _seed_tables(root: Path) -> dict[str, tuple[list[Path], int]]:
    """Rows of an earlier run; returns each table's parts on disk and row count."""
    store = ArtifactStore(root)
    store.append("runs", [{"run_id": "old", "variant": "se_resnet_tiny", "status": "completed"}])
    store.append("epochs", [{"run_id": "old", "epoch": e, "val_acc": 0.5} for e in (1, 2)])
    store.append(
        "datasets",
        [
            {
                "version": "v0001-old",
                "fingerprint": "old",
                "classes": ["a", "b"],
                "counts_json": json.dumps({"train": 8}),
            }
        ],
    )
    return {t: (sorted((root / t).iterdir()), store.read(t).num_rows) for t in ("runs", "epochs", "datasets")}


def _assert_intact(root: Path, before: dict[str, tuple[list[Path], int]], figures) -> None:
    store = ArtifactStore(root)
    for table, (parts, rows) in before.items():
        found = store.read(table).num_rows
        figures.rows(rows, found)
        assert sorted((root / table).iterdir()) == parts, table  # no torn or temp part left behind
        assert found == rows, table
    assert store.read("runs").column("run_id").to_pylist() == ["old"]


@pytest.mark.parametrize("where", ["root", "table"])
def test_unwritable_root_fails_train_variant_before_ray(
    where: str, ray_down, lfw_version: Path, tmp_path: Path, figures
) -> None:
    if where == "root":
        (tmp_path / "afile").write_text("a regular file")
        root = tmp_path / "afile" / "artifacts"
    else:  # an existing store whose runs/ table directory became a regular file
        root = tmp_path / "artifacts"
        ArtifactStore(root).append("epochs", [{"run_id": "old", "epoch": 1}])
        (root / "runs").write_text("blocked")
    figures.fault(f"artifacts-unwritable-{where}")
    cfg = PipelineConfig(variants=["se_resnet_tiny"], artifacts=str(root), train=tiny_train())
    with pytest.raises(ArtifactStoreError, match=f"{root}.*cannot append to 'runs'"):
        train_variant("se_resnet_tiny", lfw_version, cfg, ArtifactStore(cfg.artifacts_abs), run_id="blocked")
    assert not (tmp_path / "artifacts" / "ray").exists()  # no Ray Train storage: nothing started
    if where == "table":
        assert ArtifactStore(root).read("epochs").num_rows == 1


_FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    from senet_dist.artifacts import ArtifactStore, ArtifactStoreError
    from senet_dist.pipeline import PipelineConfig, prepare_dataset
    cfg = PipelineConfig(data=sys.argv[1], shards=sys.argv[2], artifacts=sys.argv[3], variants=["se_resnet_tiny"],
                         shard=json.loads(sys.argv[4]))
    store = ArtifactStore(cfg.artifacts_abs)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))
    try:
        prepare_dataset(cfg, store)
    except ArtifactStoreError as exc:
        print(exc)
        sys.exit(3)
""")


@pytest.mark.timeout(180)
def test_disk_full_while_recording_a_dataset_keeps_previous_tables(lfw_source: Path, tmp_path: Path, figures) -> None:
    shard_opts = {"resize_shorter": None, "image_format": "png", "max_count": 20, "num_procs": 1, "progress": False}
    root, shards = tmp_path / "artifacts", tmp_path / "shards"
    before = _seed_tables(root)
    # shard first, without a limit: the child then only has the datasets row left to write
    prepare_dataset(
        PipelineConfig(data=str(lfw_source), shards=str(shards), artifacts=str(tmp_path / "other"), shard=shard_opts),
        ArtifactStore(tmp_path / "other"),
    )
    proc = subprocess.run(
        [PYTHON, "-c", _FULL_DISK, str(lfw_source), str(shards), str(root), json.dumps(shard_opts)],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    figures.fault("disk-full-efbig")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert str(root) in proc.stdout and "cannot append to 'datasets'" in proc.stdout and "File too large" in proc.stdout
    _assert_intact(root, before, figures)
