"""Ray Train settings the launcher applies per fit, and the resource check behind concurrent variants
(why: docs/performance.md, goal 4)."""

from __future__ import annotations

import os

import pytest
import ray

from senet_dist.train import RaySession, TrainConfig, worker_group_demand

INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL, raising=False)
    monkeypatch.delenv(WATCHER, raising=False)


def test_defaults_apply_while_the_session_is_open(ray_session) -> None:
    with RaySession(fixed_size=False) as session:
        assert not session.started  # joined the test Ray: leaves it running on exit
        assert os.environ[INTERVAL] == "0.5"
        assert WATCHER not in os.environ  # a cluster someone else runs may drain nodes: keep Ray's watcher
    assert INTERVAL not in os.environ
    assert ray_session.is_initialized()


def test_a_fixed_size_ray_turns_the_preemption_watcher_off(ray_session) -> None:
    with RaySession(fixed_size=True):
        assert os.environ[WATCHER] == "0"
    assert WATCHER not in os.environ


def test_user_values_win_and_survive(ray_session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL, "3")
    monkeypatch.setenv(WATCHER, "1")
    with RaySession(fixed_size=True):
        assert (os.environ[INTERVAL], os.environ[WATCHER]) == ("3", "1")
    assert (os.environ[INTERVAL], os.environ[WATCHER]) == ("3", "1")


def test_env_is_restored_when_the_block_raises(ray_session) -> None:
    with pytest.raises(RuntimeError), RaySession(fixed_size=True):
        raise RuntimeError("worker group died")
    assert INTERVAL not in os.environ and WATCHER not in os.environ


def test_concurrent_fits_share_one_session(ray_session) -> None:
    """Concurrent variants fit from threads of one flow: the settings stay until the flow's session closes."""
    with RaySession() as session:
        with RaySession():  # fit's own session, when it is given none, inside the flow's: adds nothing, removes nothing
            pass
        assert os.environ[INTERVAL] == "0.5" and not session.started
    assert INTERVAL not in os.environ


def _cfg(**kw) -> TrainConfig:
    """A worker group's shape only (these tests count resources, nothing trains)."""
    return TrainConfig(model="se_resnet_tiny").with_overrides({"batch_size": 8 * kw.get("num_workers", 2), **kw})


def test_worker_group_demand_counts_like_ray_train() -> None:
    assert worker_group_demand([_cfg(num_workers=2), _cfg(num_workers=3)]) == {"CPU": 5.0}
    assert worker_group_demand([_cfg(num_workers=4, use_gpu=True)]) == {"GPU": 4.0}
    custom = _cfg(num_workers=2, use_gpu=True, resources_per_worker={"CPU": 8, "memory": 0})
    assert worker_group_demand([custom]) == {"CPU": 16.0, "GPU": 2.0}


def test_room_for_all_reads_the_running_cluster(ray_session) -> None:
    cpus = int(ray.cluster_resources()["CPU"])
    with RaySession() as session:
        assert session.room_for_all([_cfg(num_workers=1)] * cpus)
        assert not session.room_for_all([_cfg(num_workers=1)] * (cpus + 1))
        assert not session.room_for_all([_cfg(num_workers=1, use_gpu=True)])  # CPU-only test cluster


def test_quiet_hook_drops_only_the_state_api_warning() -> None:
    import logging

    from senet_dist.ray_hooks import STATE_API_NOISE, DropMessage

    drop = DropMessage(STATE_API_NOISE[1])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord(STATE_API_NOISE[0], logging.WARNING, __file__, 1, msg, None, None)

    assert not drop.filter(record(STATE_API_NOISE[1] + ". State API may be temporarily unavailable."))
    assert drop.filter(record("Failed to query placement group table: boom. Assuming placement group is not removed."))


def test_local_ray_workers_run_the_quiet_hook(tmp_path) -> None:
    """In a fresh process (this one may already hold a Ray): the Ray that a RaySession starts installs the filter in
    its worker processes, and a Ray Train run logs no state-API warning."""
    import subprocess
    import sys

    code = """
import logging, sys, tempfile, time
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from senet_dist.ray_hooks import STATE_API_NOISE
from senet_dist.train import RaySession

with RaySession(num_cpus=2) as session:
    assert session.started and session.fixed_size
    probe = ray.remote(lambda: len(logging.getLogger(STATE_API_NOISE[0]).filters))
    print("filters", ray.get(probe.remote()))
    TorchTrainer(lambda: time.sleep(4), scaling_config=ScalingConfig(num_workers=1),
                 run_config=RunConfig(name="quiet", storage_path=sys.argv[1])).fit()
assert not ray.is_initialized()
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "filters 1" in out
    assert "Failed to query Ray Train Controller actor state" not in out
