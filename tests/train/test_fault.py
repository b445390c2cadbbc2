"""Fault injection: SIGKILL one worker mid-epoch 2 of 3; Ray restarts the group, which resumes from epoch 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from senet_dist.train import fit
from senet_dist.train.checkpoint import CHECKPOINT_FILE, read_meta
from senet_dist.train.faults import FAULT_ENV, FaultPlan

pytestmark = pytest.mark.ray


@pytest.mark.timeout(300)
def test_worker_killed_mid_epoch_resumes_from_last_checkpoint(
    ray_session, lfw_version: Path, tmp_path: Path, tiny_config, monkeypatch
) -> None:
    marker = tmp_path / "fault.fired"
    monkeypatch.setenv(FAULT_ENV, FaultPlan(rank=1, epoch=2, after_steps=2, marker=str(marker)).to_env())
    cfg = tiny_config(epochs=3, keep_best_n=3, max_failures=1)
    result = fit("se_resnet_tiny", lfw_version, cfg, storage_path=tmp_path / "runs", run_name="fault")
    assert marker.is_file() and "epoch=2" in marker.read_text()  # the fault really fired, mid-epoch 2
    assert result.epochs_completed == 3
    assert [h.epoch for h in result.history] == [1, 2, 3]
    # epoch 1 ran in the first attempt; epochs 2-3 ran after restoring the epoch-1 checkpoint, not from scratch
    assert [h.resumed_from_epoch for h in result.history] == [0, 1, 1]
    for path in result.checkpoints + [result.last_checkpoint]:
        assert (Path(path) / CHECKPOINT_FILE).is_file(), path
    assert read_meta(result.last_checkpoint).epoch == 3
