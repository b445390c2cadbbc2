"""Object storage goes away in the middle of training (a real outage: the S3 endpoint the workers read shards from
stops answering, tests/s3proxy.py). A short one is ridden out by the readers' retries; one that outlasts the retry
budget fails the flow run with one clear error, and the next flow run resumes the same run from its last
checkpoint. Nothing is lost either way: every epoch is recorded exactly once. The checkpoints and tables are on
local disk here, so only the shards are cut off."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from flows.train_senet import train_senet
from senet_dist.artifacts import ArtifactStore
from senet_dist.data import shard_dataset
from senet_dist.data.config import ShardConfig
from senet_dist.train import fit
from senet_dist.train.config import TrainConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]
TRAIN = {"num_workers": 2, "batch_size": 8, "image_size": 32, "loader_workers": 1, "max_failures": 0}


class Outage(threading.Thread):
    """Cuts storage off for ``seconds`` once a checkpoint exists under ``root`` (epoch 1 is done: the workers are
    about to read the next epochs' shards); ``ended`` is when storage came back (monotonic clock)."""

    def __init__(self, root: Path, proxy, seconds: float) -> None:
        super().__init__(daemon=True)
        self.root, self.proxy, self.seconds = root, proxy, seconds
        self.ended: float | None = None
        self.start()

    def run(self) -> None:
        for _ in range(6000):
            if any(self.root.glob("**/checkpoint_*/meta.json")):
                self.proxy.outage(self.seconds)
                self.ended = time.monotonic()
                return
            time.sleep(0.05)


def test_a_short_outage_mid_run_is_ridden_out_by_the_readers(s3_proxy, s3_bucket, lfw_source, ray_up, tmp_path):
    shards = f"s3://{s3_bucket}/shards"
    shard_dataset(lfw_source, shards, ShardConfig(max_count=8, progress=False))
    cfg = TrainConfig.parse({"model": "se_resnet_tiny", "epochs": 4, **TRAIN})
    outage = Outage(tmp_path / "runs", s3_proxy, 4.0)
    result = fit("se_resnet_tiny", shards, cfg, storage_path=tmp_path / "runs", run_name="outage-short")
    finished = time.monotonic()
    outage.join(timeout=60)
    # epochs 2-4 each read their shards anew: the run could only end after storage came back
    assert outage.ended is not None and finished > outage.ended
    assert [m.epoch for m in result.history] == [1, 2, 3, 4] and result.history[-1].resumed_from_epoch == 0


@pytest.mark.prefect
def test_a_long_outage_fails_the_flow_run_and_the_next_one_resumes(
    prefect_harness, s3_proxy, s3_bucket, lfw_source, tmp_path
):
    params = {
        "data": str(lfw_source),
        "variants": ["se_resnet_tiny"],
        "shards": f"s3://{s3_bucket}/shards",
        "artifacts": str(tmp_path / "artifacts"),
        "shard": {"max_count": 8},
        "train": {"epochs": 3, **TRAIN, "loader": {"read_attempts": 2}},
    }
    outage = Outage(tmp_path / "artifacts" / "ray", s3_proxy, 45.0)  # longer than both tries of the training task
    first = train_senet(**params, return_state=True)
    assert first.is_failed()
    store = ArtifactStore(str(tmp_path / "artifacts"))
    [failed] = store.runs_latest().to_pylist()
    assert failed["status"] == "failed"
    # one line: the workers' reads gave up on a shard, named by its URI (the task's retry then found the endpoint
    # still down before any worker started)
    assert "\n" not in failed["error"] and "ShardUnavailableError: shard s3://" in failed["error"]
    assert f"s3://{s3_bucket}/shards/" in failed["error"] and "attempts" in failed["error"]
    assert "testing" not in failed["error"]  # no credentials in the message

    outage.join(timeout=120)  # storage is back
    second = train_senet(**params, return_state=True)
    assert second.is_completed(), second.message
    [run] = store.runs_latest().to_pylist()
    assert run["run_id"] == failed["run_id"] and run["status"] == "completed"  # the same run, resumed
    epochs = store.read("epochs").column("epoch").to_pylist()
    assert sorted(epochs) == [1, 2, 3]  # every epoch recorded once: none lost, none repeated
    metas = [json.loads(p.read_text()) for p in (tmp_path / "artifacts" / "ray").glob("*/checkpoint_*/meta.json")]
    last = max(metas, key=lambda m: m["epoch"])
    assert last["epoch"] == 3 and last["history"][-1]["resumed_from_epoch"] >= 1  # continued from a checkpoint
