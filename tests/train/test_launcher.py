"""Ray Train settings the launcher applies per fit, and the resource check behind concurrent variants
(why: docs/performance.md, goal 4)."""

from __future__ import annotations

import os

import pytest
import ray

from senet_dist.train import TrainConfig, launcher

INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL, raising=False)
    monkeypatch.delenv(WATCHER, raising=False)


def test_defaults_apply_during_the_fit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "_started_local", False)
    with launcher.ray_train_env() as added:
        assert os.environ[INTERVAL] == "0.5"
        assert WATCHER not in os.environ  # a cluster someone else runs may drain nodes: keep Ray's watcher
    assert added == {INTERVAL: "0.5"}
    assert INTERVAL not in os.environ


def test_local_ray_turns_the_preemption_watcher_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "_started_local", True)
    with launcher.ray_train_env():
        assert os.environ[WATCHER] == "0"
    assert WATCHER not in os.environ


def test_user_values_win_and_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "_started_local", True)
    monkeypatch.setenv(INTERVAL, "3")
    monkeypatch.setenv(WATCHER, "1")
    with launcher.ray_train_env() as added:
        assert (os.environ[INTERVAL], os.environ[WATCHER]) == ("3", "1")
    assert added == {}
    assert (os.environ[INTERVAL], os.environ[WATCHER]) == ("3", "1")


def test_env_is_restored_when_the_fit_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "_started_local", True)
    with pytest.raises(RuntimeError), launcher.ray_train_env():
        raise RuntimeError("worker group died")
    assert INTERVAL not in os.environ and WATCHER not in os.environ


def test_overlapping_fits_keep_the_env_until_the_last_one_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent variants fit from threads: the first to finish must not pull the settings from under the other."""
    monkeypatch.setattr(launcher, "_started_local", False)
    first = launcher.ray_train_env()
    first.__enter__()
    with launcher.ray_train_env():
        first.__exit__(None, None, None)
        assert os.environ[INTERVAL] == "0.5"
    assert INTERVAL not in os.environ


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model="se_resnet_tiny").with_overrides(kw)


def test_worker_group_demand_counts_like_ray_train() -> None:
    assert launcher.worker_group_demand([_cfg(num_workers=2), _cfg(num_workers=3)]) == {"CPU": 5.0}
    assert launcher.worker_group_demand([_cfg(num_workers=4, use_gpu=True)]) == {"GPU": 4.0}
    custom = _cfg(num_workers=2, use_gpu=True, resources_per_worker={"CPU": 8, "memory": 0})
    assert launcher.worker_group_demand([custom]) == {"CPU": 16.0, "GPU": 2.0}


def test_room_for_all_reads_the_running_cluster(ray_session) -> None:
    cpus = int(ray.cluster_resources()["CPU"])
    assert launcher.room_for_all([_cfg(num_workers=1)] * cpus)
    assert not launcher.room_for_all([_cfg(num_workers=1)] * (cpus + 1))
    assert not launcher.room_for_all([_cfg(num_workers=1, use_gpu=True)])  # CPU-only test cluster
