"""use_gpu on a cluster without GPUs is a clear error before any worker starts, not an endless wait for resources."""

from __future__ import annotations

import pytest

from senet_dist.train import ConfigError, fit

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def test_use_gpu_without_gpus_fails_fast(ray_session, lfw_version, tiny_config, tmp_path):
    cfg = tiny_config(use_gpu=True)
    with pytest.raises(ConfigError, match=r"use_gpu=true needs 2 GPU\(s\).*has 0.*use_gpu=false"):
        fit("se_resnet_tiny", lfw_version, cfg, storage_path=tmp_path / "runs", run_name="gpu-check")
    assert not (tmp_path / "runs" / "gpu-check").exists()
