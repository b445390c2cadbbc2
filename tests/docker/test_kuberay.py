"""docker/k8s/: the KubeRay manifests validate against KubeRay's own CRD schemas (v1.7.0, tests/fixtures/kuberay-crds)
with unknown fields rejected, and agree with the image, the Ray pin, the cluster environment and prefect.yaml."""

from __future__ import annotations

import copy
import hashlib
import shlex
from functools import cache
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from tests.docker._compose import REPO
from tests.docker.test_dockerfile import pin
from tests.docker.test_docs import package_version

K8S = REPO / "docker" / "k8s"
CRDS = REPO / "tests" / "fixtures" / "kuberay-crds"
CRD_SHA256 = {
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
    "ray.io_rayjobs.yaml": "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5",
}
# Composition keywords whose values are schemas (or lists of them); ``properties`` maps names to schemas.
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")


def strict(schema: Any) -> Any:
    """A copy of an openAPI v3 schema that rejects unknown fields: ``additionalProperties: false`` wherever an object
    lists its ``properties`` and neither allows extra keys nor sets ``x-kubernetes-preserve-unknown-fields``
    (Kubernetes' API server prunes unknown fields silently; a typo would be dropped without a word)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in _SCHEMA_VALUES:
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [strict(sub) for sub in out[key]]
    return out


@cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    file = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}[kind]
    crd = yaml.load((CRDS / file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB: libyaml
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))


def errors(manifest: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in _validator(manifest["kind"]).iter_errors(manifest)]


def manifest(name: str) -> dict[str, Any]:
    (doc,) = yaml.safe_load_all((K8S / name).read_text())
    return doc


def pods(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster["spec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


# ---- the schemas, and that the validation can fail ------------------------------------------------------------
def test_vendored_crds_are_kuberays_unmodified() -> None:
    for file, sha in CRD_SHA256.items():
        assert hashlib.sha256((CRDS / file).read_bytes()).hexdigest() == sha, file
    assert "Apache License" in (CRDS / "LICENSE").read_text()
    assert "feeaf72" in (CRDS / "README.md").read_text()


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_manifest_validates_against_the_kuberay_crd(name: str) -> None:
    doc = manifest(name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert errors(doc) == []


@pytest.mark.parametrize(
    "path,value,expected",
    [
        (("spec", "workerGroupSpec"), [], "'workerGroupSpec' was unexpected"),  # typo for workerGroupSpecs
        (("spec", "workerGroupSpecs", 0, "maxReplica"), 4, "'maxReplica' was unexpected"),
        (("spec", "headGroupSpec", "template", "spec", "containers", 0, "imagePullPolicyy"), "Always", "unexpected"),
        (("spec", "workerGroupSpecs", 0, "maxReplicas"), "four", "'four' is not of type 'integer'"),
        (("spec", "enableInTreeAutoscaling"), "yes", "'yes' is not of type 'boolean'"),
    ],
)
def test_a_broken_raycluster_fails(path: tuple, value: Any, expected: str) -> None:
    broken = copy.deepcopy(manifest("raycluster.yaml"))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    found = errors(broken)
    assert any(expected in e for e in found), found


def test_a_broken_rayjob_fails() -> None:
    job = manifest("rayjob.yaml")
    assert any(
        "'shutdownAfterJobFinish' was unexpected" in e
        for e in errors({**job, "spec": {**job["spec"], "shutdownAfterJobFinish": True}})
    )
    assert any(
        "is not of type 'string'" in e for e in errors({**job, "spec": {**job["spec"], "entrypoint": ["senet-dist"]}})
    )


def test_strict_keeps_what_kubernetes_keeps_open() -> None:
    schema = strict(
        {
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
                "properties": {"type": "object", "properties": {"x": {"type": "integer"}}},  # a field named so
            },
        }
    )
    v = jsonschema.Draft7Validator(schema)
    assert v.is_valid({"labels": {"any": "thing"}, "free": {"b": 1}, "properties": {"x": 1}})
    assert not v.is_valid({"properties": {"y": 1}}) and not v.is_valid({"other": 1})


# ---- what the manifests say -----------------------------------------------------------------------------------
def test_raycluster_matches_image_and_ray_pin() -> None:
    cluster = manifest("raycluster.yaml")
    assert cluster["spec"]["rayVersion"] == pin("ray")
    for pod in pods(cluster):
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
        for container in pod["spec"]["containers"]:
            assert container["image"] == f"registry.example.com/senet-dist:{package_version()}"
            assert container["livenessProbe"]["exec"]["command"][0] == "senet-healthcheck"
            assert {"/dev/shm", "/app/data"} <= {m["mountPath"] for m in container["volumeMounts"]}
            assert {"configMapRef": {"name": "senet-env"}} in container["envFrom"]


def test_raycluster_autoscales_gpu_workers_from_zero_to_4_nodes_of_8() -> None:
    cluster = manifest("raycluster.yaml")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no training on the head
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (0, 0, 4)
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_cluster_env_names_the_head_service_and_object_storage() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "cluster-env.yaml").read_text())}
    cluster = manifest("raycluster.yaml")
    ns = cluster["metadata"]["namespace"]
    assert docs["Namespace"]["metadata"]["name"] == ns == docs["ConfigMap"]["metadata"]["namespace"]
    env = docs["ConfigMap"]["data"]
    assert env["RAY_ADDRESS"] == f"{cluster['metadata']['name']}-head-svc.{ns}.svc.cluster.local:6379"
    assert env["SENET_ARTIFACTS"].startswith("s3://")  # multi-node: object storage, never a local path
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for p in pods(cluster)
        for v in p["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {docs["PersistentVolumeClaim"]["metadata"]["name"]}
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def _rayjob_pipeline() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `senet-dist run` options of the RayJob's entrypoint as the CLI parses them, its pipeline config)."""
    from senet_dist.cli import app
    from senet_dist.pipeline import PipelineConfig
    from senet_dist.schema import parse_overrides

    argv = shlex.split(manifest("rayjob.yaml")["spec"]["entrypoint"])
    assert argv[:2] == ["senet-dist", "run"]
    command = typer.main.get_command(app)
    params = command.commands["run"].make_context("run", argv[2:]).params  # type: ignore[attr-defined]
    cfg = PipelineConfig.parse(
        {
            "data": params["data"],
            "variants": params["variant"],
            "shards": params["shards"],
            "train": parse_overrides(params["set_"]),
        }
    )
    return params, cfg.model_dump()


def test_rayjob_runs_the_flow_once_on_the_raycluster_with_the_gpu_cluster_deployments_config() -> None:
    job, cluster = manifest("rayjob.yaml"), manifest("raycluster.yaml")
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    params, cfg = _rayjob_pipeline()
    assert params["artifacts"] is None  # storage from SENET_ARTIFACTS (cluster-env.yaml)
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == "gpu-cluster"]
    from senet_dist.pipeline import PipelineConfig

    want = PipelineConfig.parse({k: v for k, v in deployment["parameters"].items() if k != "shard"}).model_dump()
    for key in ("data", "variants", "shards", "train"):
        assert cfg[key] == want[key], key
