"""Process faults during training: a Ray worker SIGKILLed mid-epoch, and the whole driver SIGKILLed.

tests/train/test_fault.py checks the worker-kill resume at ``fit`` level; here it goes through the pipeline
(``train_variant``) and the Arrow tables, and the driver kill checks that re-running with the same run name resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from senet_dist.artifacts import ArtifactStore, ArtifactStoreError
from senet_dist.pipeline import PipelineConfig, train_variant
from senet_dist.train import fit
from senet_dist.train.checkpoint import CHECKPOINT_FILE, META_FILE, read_meta
from senet_dist.train.faults import FAULT_ENV, FaultPlan
from tests.helpers import PYTHON

from .conftest import tiny_train, train_config

pytestmark = [pytest.mark.ray]


def _assert_checkpoint_rows_resolve(store: ArtifactStore, figures) -> list[dict]:
    """Every ``checkpoints`` row points at a checkpoint on disk whose weights still hash to the recorded sha256."""
    rows = store.read("checkpoints").to_pylist()
    intact = 0
    for row in rows:
        weights = Path(row["uri"]) / CHECKPOINT_FILE
        if weights.is_file() and hashlib.sha256(weights.read_bytes()).hexdigest() == row["sha256"]:
            intact += 1
    figures.rows(len(rows), intact)
    assert rows and intact == len(rows), rows
    return rows


@pytest.mark.timeout(420)
def test_worker_sigkill_mid_epoch_resumes_and_tables_stay_consistent(
    ray_up, lfw_version: Path, tmp_path: Path, figures, monkeypatch
) -> None:
    marker = tmp_path / "fault.fired"
    monkeypatch.setenv(FAULT_ENV, FaultPlan(rank=1, epoch=2, after_steps=2, marker=str(marker)).to_env())
    train = tiny_train(epochs=2, keep_best_n=2, max_failures=1)
    cfg = PipelineConfig(variants=["se_resnet_tiny"], artifacts=str(tmp_path / "artifacts"), train=train)
    store = ArtifactStore(cfg.artifacts_abs)
    summary = train_variant("se_resnet_tiny", lfw_version, cfg, store, run_id="worker-kill")
    assert marker.is_file() and "rank=1 epoch=2" in marker.read_text()  # the SIGKILL really happened mid-epoch 2
    figures.fault("ray-worker-sigkill")
    figures.run_completed()
    assert summary.epochs == 2
    (run,) = store.runs_latest().to_pylist()
    assert run["status"] == "completed" and run["epochs_completed"] == 2
    epochs = store.read("epochs").to_pylist()
    figures.rows(2, len({e["epoch"] for e in epochs}))
    assert sorted(e["epoch"] for e in epochs) == [1, 2]  # each epoch once: the killed attempt left no duplicate
    rows = _assert_checkpoint_rows_resolve(store, figures)
    history = read_meta(max((r["uri"] for r in rows), key=lambda u: read_meta(u).epoch)).history
    assert [h.resumed_from_epoch for h in history] == [0, 1], history  # epoch 2 re-ran from the epoch-1 checkpoint


# ---- driver kill ---------------------------------------------------------------------------------------
_DRIVER = textwrap.dedent("""
    import json, sys
    from senet_dist.train import TrainConfig, fit
    cfg = TrainConfig().with_overrides(json.loads(sys.argv[3]))
    res = fit("se_resnet_tiny", sys.argv[1], cfg, storage_path=sys.argv[2], run_name=sys.argv[4])
    print(json.dumps({"epochs": res.epochs_completed}))
""")


def _registered_checkpoint(run_dir: Path) -> int | None:
    """Epoch of the newest checkpoint Ray has *registered* (listed in its snapshot, with our meta.json on disk)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    if not snapshot.is_file():
        return None
    try:
        text = snapshot.read_text()
    except OSError:
        return None
    epochs = [
        read_meta(d).epoch
        for d in run_dir.glob("checkpoint_*")
        if d.name in text and (d / META_FILE).is_file() and (d / CHECKPOINT_FILE).is_file()
    ]
    return max(epochs, default=None)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver first (the fault), then whatever it spawned in its own session (cleanup)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _settled_checkpoint(run_dir: Path, quiet_s: float = 5.0, limit_s: float = 90.0) -> int | None:
    """The registered epoch once it stops moving: Ray processes of a SIGKILLed driver (its controller and workers)
    can outlive it for a moment and register another checkpoint or two before they notice."""
    last, since, deadline = _registered_checkpoint(run_dir), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _registered_checkpoint(run_dir)
        if now != last:
            last, since = now, time.monotonic()
    return last


DRIVER_KILL_EPOCHS = 8  # tiny epochs: enough left after the first checkpoint that the kill cannot miss the run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_driver_sigkill_then_rerun_same_name_resumes(ray_up, lfw_version: Path, tmp_path: Path, figures) -> None:
    storage, name, epochs = tmp_path / "ray runs", "driver-kill", DRIVER_KILL_EPOCHS
    overrides = tiny_train(epochs=epochs, keep_best_n=epochs)
    proc = subprocess.Popen(
        [PYTHON, "-c", _DRIVER, str(lfw_version), str(storage), json.dumps(overrides), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, done = time.monotonic() + 300, None
        while done is None and proc.poll() is None and time.monotonic() < deadline:
            done = _registered_checkpoint(storage / name)
            time.sleep(0.2)
        assert done is not None, f"no checkpoint before the driver ended (rc={proc.poll()})"
    finally:
        _kill_group(proc)
    settled = _settled_checkpoint(storage / name)
    assert settled is not None and settled < epochs, f"the killed run reached epoch {settled}; nothing to resume"
    figures.fault("driver-sigkill")
    result = fit(
        "se_resnet_tiny",
        lfw_version,
        train_config(epochs=epochs, keep_best_n=epochs),
        storage_path=storage,
        run_name=name,
    )
    figures.run_completed()
    assert [h.epoch for h in result.history] == list(range(1, epochs + 1))
    first_new = next(h for h in result.history if h.resumed_from_epoch > 0)
    assert first_new.resumed_from_epoch == settled and first_new.epoch == settled + 1
    for path in result.checkpoints:
        assert (Path(path) / CHECKPOINT_FILE).is_file(), path


# ---- a Prefect-style retry after the recording step failed ---------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retry_after_a_recording_failure_completes_without_duplicate_rows(
    ray_up, lfw_version: Path, tmp_path: Path, figures
) -> None:
    root = tmp_path / "artifacts"
    cfg = PipelineConfig(variants=["se_resnet_tiny"], artifacts=str(root), train=tiny_train(epochs=1))
    store = ArtifactStore(root)
    root.mkdir()
    (root / "evaluations").write_text("blocked")  # training succeeds; recording its evaluation fails
    with pytest.raises(ArtifactStoreError, match="evaluations"):
        train_variant("se_resnet_tiny", lfw_version, cfg, store, run_id="retried")
    figures.fault("record-failure-then-retry")
    (root / "evaluations").unlink()
    # flows.train_senet.train_task retries with the same run id (new_run_id is deterministic per flow run)
    summary = train_variant("se_resnet_tiny", lfw_version, cfg, store, run_id="retried")
    figures.run_completed()
    assert summary.epochs == 1
    (run,) = store.runs_latest().to_pylist()
    assert run["status"] == "completed"
    uris = [c["uri"] for c in _assert_checkpoint_rows_resolve(store, figures)]
    epochs = [e["epoch"] for e in store.read("epochs").to_pylist()]
    figures.rows(1, len(epochs))
    assert epochs == [1], epochs  # each epoch recorded once, not once per attempt (today: [1, 1])
    assert len(uris) == len(set(uris)), uris
