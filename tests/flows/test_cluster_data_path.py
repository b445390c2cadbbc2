"""The cluster data path end to end, on real parts: a two-node Ray cluster on this machine (tests/raycluster.py), the
ImageFolder, the shards and every artifact only in S3 (a moto server on loopback), the training workers pinned to the
second node by a custom resource, and a driver whose working directory holds no data. Sharding runs as Ray tasks,
the workers stream the shards from the bucket, the evaluation runs as a Ray task on the training node."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import ray

from flows.train_senet import train_senet
from senet_dist.artifacts import ArtifactStore
from senet_dist.storage import list_files, upload_dir
from tests.raycluster import RayCluster

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.slow, pytest.mark.timeout(900)]
NODE_B = {"num_cpus": 2, "resources": {"node_b": 2}}


@pytest.fixture()
def scratch(monkeypatch: pytest.MonkeyPatch):
    """Every temp file of this test and of the cluster's processes (Ray's session dirs included) goes here, so the
    test can show afterwards that no shard was left on local disk. Short: Ray puts unix sockets inside it."""
    d = Path(tempfile.mkdtemp(prefix="sn-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def cluster(scratch: Path):
    """A head with 1 CPU plus a second node with 2 CPUs and the resource ``node_b``; this process's own Ray (the test
    session's local one) is shut down while it runs."""
    if ray.is_initialized():
        ray.shutdown()
    with RayCluster(head_cpus=1) as c:
        c.add_node(**NODE_B)
        try:
            yield c
        finally:
            ray.shutdown()


def test_the_flow_on_two_nodes_reads_and_writes_only_object_storage(
    prefect_harness, s3_bucket, lfw_source, cluster, scratch, tmp_path, monkeypatch
):
    bucket = f"s3://{s3_bucket}"
    upload_dir(lfw_source, f"{bucket}/photos")
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    monkeypatch.chdir(driver_dir)  # nothing here: no source, no shards

    state = train_senet(
        data=f"{bucket}/photos",
        variants=["se_resnet_tiny"],
        shards=f"{bucket}/shards",
        artifacts=f"{bucket}/senet",
        ray_address=cluster.address,
        dataset_name="lfw",
        shard={"max_count": 8},
        train={
            "epochs": 2,
            "num_workers": 2,
            "batch_size": 8,
            "loader_workers": 1,
            "keep_best_n": 1,
            "resources_per_worker": {"CPU": 1, "node_b": 1},
        },
        return_state=True,
    )
    assert state.is_completed(), state.message

    store = ArtifactStore(f"{bucket}/senet")
    [dataset] = store.read("datasets").to_pylist()
    assert dataset["uri"].startswith(f"{bucket}/shards/v0001-")
    shards = list_files(f"{bucket}/shards")
    assert "LATEST" in shards and sum(f.endswith(".tar") for f in shards) >= 6  # 48 images, 8 per shard
    [run] = store.runs_latest().to_pylist()
    assert run["status"] == "completed" and run["best_checkpoint_uri"].startswith(f"{bucket}/senet/ray/")
    assert store.read("epochs").num_rows == 2
    [evaluation] = store.read("evaluations").to_pylist()
    report = json.loads(evaluation["report_json"])
    assert report["checkpoint"] == run["best_checkpoint_uri"]
    assert report["num_samples"] == json.loads(dataset["counts_json"])["test"] > 0
    reports = list_files(f"{bucket}/senet/reports/{run['run_id']}")
    assert {"confusion_matrix.png", "curves.png", "report.json"} <= set(reports)

    local_tars = [p for root in (scratch, tmp_path) for p in root.rglob("*.tar")]
    assert local_tars == []  # shards were built in temp dirs, uploaded, removed; workers streamed them
    assert list(driver_dir.iterdir()) == []  # and the driver's working directory stayed empty
