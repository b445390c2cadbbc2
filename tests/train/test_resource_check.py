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


def test_on_a_cluster_a_shortage_is_a_warning(ray_session, tiny_config, caplog):
    """A cluster may autoscale: the check warns and lets Ray Train wait (not run here: it would wait)."""
    cfg, _ = _too_many_workers(tiny_config)
    with caplog.at_level(logging.WARNING, logger=session_module.__name__), RaySession(fixed_size=False) as session:
        session.check_resources(cfg)
    assert "waiting for the cluster to grow" in caplog.text
