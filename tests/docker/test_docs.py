"""docs/scaling.md and docs/kuberay.md: example manifests parse and stay consistent with the image and pins."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.docker._compose import REPO
from tests.docker.test_dockerfile import pin

DOCS = REPO / "docs"


def yaml_blocks(name: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


def package_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def test_kuberay_manifests_parse() -> None:
    blocks = yaml_blocks("kuberay.md")
    assert len(blocks) >= 3
    for block in blocks:
        docs = list(yaml.safe_load_all(block))
        assert docs and all(d is not None for d in docs)


def _raycluster() -> dict:
    for block in yaml_blocks("kuberay.md"):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == "RayCluster":
                return doc
    pytest.fail("docs/kuberay.md has no RayCluster manifest")


def test_raycluster_matches_image_and_ray_pin() -> None:
    cluster = _raycluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == pin("ray")
    pods = [cluster["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in cluster["spec"]["workerGroupSpecs"]]
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
        for container in pod["spec"]["containers"]:
            assert container["image"].endswith(f"/senet-dist:{package_version()}")
            assert container["livenessProbe"]["exec"]["command"][0] == "senet-healthcheck"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/dev/shm", "/app/data"} <= mounts


def test_raycluster_gpu_workers_request_gpus() -> None:
    groups = _raycluster()["spec"]["workerGroupSpecs"]
    limits = [c["resources"]["limits"] for g in groups for c in g["template"]["spec"]["containers"]]
    assert limits and all(int(lim["nvidia.com/gpu"]) >= 1 for lim in limits)


def test_kuberay_deployment_uses_the_ray_driver_role_and_s3() -> None:
    deployments = [d for b in yaml_blocks("kuberay.md") for d in yaml.safe_load_all(b) if isinstance(d, list)]
    (entry,) = [e for lst in deployments for e in lst if e.get("name") == "gpu-cluster"]
    assert entry["work_pool"]["job_variables"]["command"].startswith("senet-entrypoint ray-driver ")
    assert entry["parameters"]["artifacts"].startswith("s3://")
    train = entry["parameters"]["train"]
    assert train["lr"] == pytest.approx(0.1 * train["batch_size"] / 256)  # linear scaling rule as documented
    assert "ray-driver)" in (REPO / "docker" / "entrypoint.sh").read_text()


def test_scaling_doc_keeps_the_measured_placeholder() -> None:
    text = (DOCS / "scaling.md").read_text()
    assert "## Measured: 2 CPU workers vs 1 on the 2-core dev machine" in text


@pytest.mark.parametrize("gpus,batch,lr", [(1, 256, 0.1), (8, 2048, 0.8), (64, 8192, 3.2)])
def test_scaling_table_follows_linear_lr_rule(gpus: int, batch: int, lr: float) -> None:
    text = (DOCS / "scaling.md").read_text()
    assert re.search(rf"\| `batch_size` \(global\) \|.*\b{batch}\b", text)
    assert lr == pytest.approx(0.1 * batch / 256)
    assert re.search(rf"\| `lr` \(`optimizer.lr`, SGD\) \|.*\b{lr:g}\b", text)
