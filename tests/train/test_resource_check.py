"""A worker group the cluster cannot hold is a clear error before any worker starts, not an endless wait: Ray Train
retries such a start every 60 s forever."""

from __future__ import annotations

import logging

import pytest
import ray

from senet_dist.train import ConfigError, RaySession, ResourceError, fit
from senet_dist.train import session as session_module

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def test_use_gpu_without_gpus_fails_fast(ray_session, lfw_version, tiny_config, tmp_path):
    cfg = tiny_config(use_gpu=True)
    with pytest.raises(ResourceError, match=r"use_gpu=true needs 2 GPU\(s\).*has 0.*use_gpu=false"):
        fit("se_resnet_tiny", lfw_version, cfg, storage_path=tmp_path / "runs", run_name="gpu-check")
    assert not (tmp_path / "runs").exists()


def _too_many_workers(tiny_config):
    cpus = int(ray.cluster_resources()["CPU"])
    return tiny_config(num_workers=cpus + 1, batch_size=8 * (cpus + 1)), cpus


def test_more_workers_than_a_local_ray_has_cpus_fails_fast(ray_session, lfw_version, tiny_config, tmp_path):
    cfg, cpus = _too_many_workers(tiny_config)
    with (
        RaySession(fixed_size=True) as session,
        pytest.raises(
            ConfigError,
            match=rf"{cpus + 1} worker\(s\) need {cpus + 1} CPU \(the Ray cluster has {cpus}\): lower num_workers",
        ),
    ):
        fit("se_resnet_tiny", lfw_version, cfg, storage_path=tmp_path / "runs", run_name="cpu-check", session=session)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_without_an_address_the_ray_is_fixed_size(ray_session, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert RaySession().fixed_size  # a local Ray, started here or already up in this process
    assert not RaySession("127.0.0.1:6379").fixed_size  # a cluster, which an autoscaler may grow
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not RaySession().fixed_size


def test_on_a_cluster_a_shortage_waits_then_fails_naming_what_is_missing(ray_session, tiny_config, caplog, monkeypatch):
    """A cluster may autoscale: the check waits (logging what is missing every WAIT_LOG_EVERY_S), then gives up.
    (tests/train/test_cluster_wait.py: a node that joins during the wait lets the run proceed.)"""
    monkeypatch.setattr(session_module, "WAIT_LOG_EVERY_S", 0.5)
    cfg, cpus = _too_many_workers(tiny_config)
    with (
        caplog.at_level(logging.WARNING, logger=session_module.__name__),
        RaySession(fixed_size=False, resource_wait_s=1.6) as session,
        pytest.raises(ResourceError) as err,
    ):
        session.check_resources(cfg)
    waits = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waits) >= 2, waits  # logged at the start and again while waiting
    assert all(f"need {cpus + 1} CPU (the Ray cluster has {cpus})" in w for w in waits)
    assert str(err.value) == (
        f"{cpus + 1} worker(s) need {cpus + 1} CPU (the Ray cluster has {cpus}), and the Ray cluster did not grow "
        "to hold them within resource_wait_s=1.6 s: add nodes with those resources, lower num_workers or "
        "resources_per_worker, or raise resource_wait_s"
    )


def test_on_a_cluster_missing_gpus_are_waited_for_too(ray_session, tiny_config):
    """KubeRay scales GPU worker groups from zero: no GPU right now is not an error on a cluster that can grow."""
    with RaySession(fixed_size=False, resource_wait_s=0.5) as session, pytest.raises(ResourceError) as err:
        session.check_resources(tiny_config(use_gpu=True))
    assert "2 GPU (the Ray cluster has 0)" in str(err.value) and "resource_wait_s=0.5" in str(err.value)


def test_the_wait_limit_is_a_pipeline_setting_with_the_sessions_default():
    from senet_dist.pipeline import PipelineConfig

    assert PipelineConfig().resource_wait_s == RaySession().resource_wait_s == 600
    assert PipelineConfig.parse({"resource_wait_s": 30}).resource_wait_s == 30
    with pytest.raises(ConfigError, match="resource_wait_s"):
        PipelineConfig.parse({"resource_wait_s": -1})
