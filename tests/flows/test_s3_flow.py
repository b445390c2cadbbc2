"""``train-senet`` with ``artifacts=s3://...`` against a real local S3 endpoint (moto server on loopback):
Ray Train checkpoints, reports and every Arrow table live in the bucket, and the tables read back."""

from __future__ import annotations

import json

import pytest

from flows.train_senet import train_senet
from senet_dist.artifacts import ArtifactStore
from senet_dist.release import registry
from senet_dist.storage import list_files, read_bytes

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.timeout(900)]


def test_flow_with_s3_artifacts_root(prefect_harness, s3_bucket, lfw_source, tmp_path):
    root = f"s3://{s3_bucket}/senet"
    state = train_senet(
        data=str(lfw_source),
        variants=["se_resnet_tiny"],
        shards=str(tmp_path / "shards"),
        artifacts=root,
        shard={"max_count": 8},
        return_state=True,
        train={"epochs": 2, "num_workers": 2, "batch_size": 8, "loader_workers": 0, "keep_best_n": 1},
    )
    assert state.is_completed(), state.message

    store = ArtifactStore(root)
    [run] = store.runs_latest().to_pylist()
    assert run["status"] == "completed" and run["best_checkpoint_uri"].startswith(f"s3://{s3_bucket}/senet/ray/")
    ckpts = store.read("checkpoints").to_pylist()
    assert ckpts and all(c["uri"].startswith("s3://") for c in ckpts)
    for c in ckpts:  # the index points at real objects whose bytes match what it recorded
        meta = json.loads(read_bytes(c["uri"] + "/meta.json"))
        assert meta["epoch"] == c["epoch"]
    assert store.read("epochs").num_rows == 2 and store.read("evaluations").num_rows == 1
    reports = list_files(f"{root}/reports/{run['run_id']}")
    assert {"confusion_matrix.png", "curves.png", "report.json"} <= set(reports)
    champ = registry.champion(store, lfw_source.name)  # promoted under the S3 lease lock, exported to the bucket
    assert champ is not None and champ.model_id == run["run_id"]
    assert champ.export_uris == (f"{root}/exports/{run['run_id']}/torchscript",)
    assert list_files(champ.export_uris[0]) == ["model.json", "model.pt"]
