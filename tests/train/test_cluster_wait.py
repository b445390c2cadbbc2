"""On a cluster that can grow, a run waits for the resources its worker group needs (an autoscaler adds nodes, GPU
nodes from zero) up to ``resource_wait_s``; and a local storage path on several nodes is refused before any worker
starts. A real two-node Ray cluster on this machine (tests/raycluster.py) that the driver joins by address."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import ray

from senet_dist.train import ConfigError, RaySession, ResourceError, fit
from senet_dist.train import session as session_module
from tests.raycluster import RayCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
NODE_B = {"num_cpus": 2, "resources": {"node_b": 2}}


@pytest.fixture()
def cluster():
    """A head with 2 CPUs; this process's own Ray (the test session's local one) is shut down while it runs."""
    if ray.is_initialized():
        ray.shutdown()
    with RayCluster(head_cpus=2) as c:
        try:
            yield c
        finally:
            ray.shutdown()  # the joined session leaves the connection open (it never shuts a cluster down)


class _Seen(logging.Handler):
    """Sets ``event`` when the session logs that it is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.event, self.messages = threading.Event(), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if "waiting up to" in record.getMessage():
            self.event.set()


def test_a_run_waits_for_a_node_that_joins_later_and_trains_on_it(
    cluster, lfw_version, tiny_config, tmp_path, monkeypatch
):
    monkeypatch.setenv(session_module.SHARED_STORAGE_ENV, "1")  # every node of this cluster shares this disk
    cfg = tiny_config(epochs=1, resources_per_worker={"CPU": 1, "node_b": 1})  # only node_b can hold the workers
    seen = _Seen()
    logger = logging.getLogger(session_module.__name__)
    logger.addHandler(seen)
    added: list[str] = []

    def autoscaler() -> None:
        if seen.event.wait(120):
            time.sleep(3)  # the run has been waiting a while when the node arrives
            added.append(cluster.add_node(**NODE_B))

    scaler = threading.Thread(target=autoscaler)
    scaler.start()
    try:
        with RaySession(cluster.address, resource_wait_s=180) as session:
            assert not session.fixed_size and not session.started
            result = fit("se_resnet_tiny", lfw_version, cfg, storage_path=tmp_path / "runs", session=session)
    finally:
        seen.event.set()
        scaler.join()
        logger.removeHandler(seen)
    assert added, "the run never waited"
    waiting = [m for m in seen.messages if "waiting up to" in m]
    assert "2 node_b (the Ray cluster has 0)" in waiting[0]
    assert result.epochs_completed == 1 and result.best_checkpoint is not None


def test_resources_that_never_appear_fail_after_the_limit_with_one_line(
    cluster, lfw_version, tiny_config, tmp_path, monkeypatch
):
    monkeypatch.setenv(session_module.SHARED_STORAGE_ENV, "1")
    cluster.add_node(**NODE_B)
    cfg = tiny_config(resources_per_worker={"CPU": 1, "node_c": 1})
    start = time.monotonic()
    with (
        RaySession(cluster.address, resource_wait_s=3) as session,
        pytest.raises(ResourceError) as err,
    ):
        fit("se_resnet_tiny", lfw_version, cfg, storage_path=tmp_path / "runs", session=session)
    assert time.monotonic() - start >= 3
    message = str(err.value)
    assert "\n" not in message
    assert "2 node_c (the Ray cluster has 0)" in message and "resource_wait_s=3" in message
    assert "node_b" not in message and "CPU" not in message  # only what is missing
    assert not (tmp_path / "runs").exists()


def test_a_local_storage_path_on_two_nodes_fails_before_any_worker_starts(
    cluster, lfw_version, tiny_config, tmp_path, monkeypatch
):
    monkeypatch.delenv(session_module.SHARED_STORAGE_ENV, raising=False)
    cluster.add_node(**NODE_B)
    with (
        RaySession(cluster.address) as session,
        pytest.raises(ConfigError, match=r"on local disk but the Ray cluster has 2 nodes: use an object-storage URI"),
    ):
        fit("se_resnet_tiny", lfw_version, tiny_config(), storage_path=tmp_path / "runs", session=session)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_one_node_accepts_a_local_storage_path(cluster, tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv(session_module.SHARED_STORAGE_ENV, raising=False)
    with RaySession(cluster.address) as session:
        session.check_storage(str(tmp_path / "runs"))  # one node: its disk is the only one
        cluster.add_node(**NODE_B)
        with pytest.raises(ConfigError, match=rf"shared mount .* set {session_module.SHARED_STORAGE_ENV}=1"):
            session.check_storage(str(tmp_path / "runs"))
        monkeypatch.setenv(session_module.SHARED_STORAGE_ENV, "1")
        session.check_storage(str(tmp_path / "runs"))
        session.check_storage("s3://bucket/runs")
