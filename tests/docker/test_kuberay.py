"""docker/k8s/: the KubeRay manifests validate against KubeRay's own CRD schemas (v1.7.0, tests/fixtures/kuberay-crds)
with unknown fields rejected, and agree with the image, the Ray pin, the cluster environment and prefect.yaml."""

from __future__ import annotations

import copy
import hashlib
import json
import re
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


# ---- authentication, the NetworkPolicy and the pods' security context (docs/security.md) -----------------------
RAY_TOKEN_SECRET = ("senet-ray-token", "auth_token")  # KubeRay reads this key of authOptions.secretName
PREFECT_AUTH_SECRET = ("prefect-auth", "auth-string")  # the prefect-helm charts' key for an existing secret
HARDENED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
WORK_POOL = REPO / "docker" / "k8s" / "work-pool-kubernetes.json"
# The networking.k8s.io/v1 NetworkPolicy fields (Kubernetes API reference), unknown fields rejected: enough to catch
# a misspelt or misplaced key, which the API server would reject (or, in a selector, silently widen).
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
_PEER = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"podSelector": _SELECTOR, "namespaceSelector": _SELECTOR, "ipBlock": {"type": "object"}},
}
_PORT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
        "port": {"type": ["integer", "string"]},
        "endPort": {"type": "integer"},
    },
}
_RULE = {"type": "array", "items": {"type": "object", "additionalProperties": False}}
NETWORK_POLICY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"},
        "kind": {"const": "NetworkPolicy"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": {"type": "object"}},
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["podSelector"],
            "properties": {
                "podSelector": _SELECTOR,
                "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                "ingress": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "from": {"type": "array", "items": _PEER},
                            "ports": {"type": "array", "items": _PORT},
                        },
                    },
                },
                "egress": _RULE,
            },
        },
    },
}


def network_policy() -> dict[str, Any]:
    return manifest("network-policy.yaml")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are modelled here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def admits(policy: dict[str, Any], labels: dict[str, str], namespace: str, port: int) -> bool:
    """Whether ``policy`` lets a pod with ``labels`` in ``namespace`` connect to ``port`` of a pod it selects
    (NetworkPolicy's semantics: any rule whose ports and any of whose peers match; a peer without a namespaceSelector
    means the policy's own namespace)."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}  # the label Kubernetes sets on every namespace
    for rule in policy["spec"].get("ingress", []):
        if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
            continue
        for peer in rule.get("from", []):
            if "ipBlock" in peer:
                continue
            if "namespaceSelector" in peer:
                in_ns = _selects(peer["namespaceSelector"], ns_labels)
            else:
                in_ns = namespace == policy["metadata"]["namespace"]
            if in_ns and _selects(peer.get("podSelector", {}), labels):
                return True
    return False


def test_network_policy_is_well_formed_and_the_check_catches_mistakes() -> None:
    v = jsonschema.Draft202012Validator(NETWORK_POLICY_SCHEMA)
    policy = network_policy()
    assert [e.message for e in v.iter_errors(policy)] == []
    for path, key in [(("spec",), "podSelectors"), (("spec", "ingress", 0, "from", 0), "podselector")]:
        broken = copy.deepcopy(policy)
        node = broken
        for step in path:
            node = node[step]
        node[key] = {}
        assert not v.is_valid(broken), key


def test_network_policy_selects_every_pod_of_the_ray_cluster_head_included() -> None:
    policy, cluster = network_policy(), manifest("raycluster.yaml")
    assert policy["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    name = cluster["metadata"]["name"]
    head = {"ray.io/cluster": name, "ray.io/node-type": "head", "ray.io/group": "headgroup"}  # KubeRay's labels
    worker = {"ray.io/cluster": name, "ray.io/node-type": "worker", "ray.io/group": "gpu-8x"}
    assert _selects(policy["spec"]["podSelector"], head) and _selects(policy["spec"]["podSelector"], worker)
    assert not _selects(policy["spec"]["podSelector"], {"ray.io/cluster": "another"})


def test_network_policy_admits_the_cluster_the_prefect_pods_and_the_operator_only() -> None:
    policy, ns = network_policy(), "senet"
    name = manifest("raycluster.yaml")["metadata"]["name"]
    flow_run = json.loads(WORK_POOL.read_text())["job_configuration"]["job_manifest"]["spec"]["template"]
    submitter = manifest("rayjob.yaml")["spec"]["submitterPodTemplate"]
    for port in (6379, 8265, 10001, 52365):  # GCS, dashboard, a worker port, the dashboard agent
        assert admits(policy, {"ray.io/cluster": name, "ray.io/node-type": "worker"}, ns, port)
        assert admits(policy, flow_run["metadata"]["labels"], ns, port)  # the Prefect flow-run pods join as nodes
        assert admits(policy, submitter["metadata"]["labels"], ns, port)
        assert not admits(policy, {"app": "anything-else"}, ns, port)
        assert not admits(policy, flow_run["metadata"]["labels"], "default", port)  # the label, another namespace
        assert not admits(policy, {"ray.io/cluster": "another-cluster"}, ns, port)
    operator = {"app.kubernetes.io/name": "kuberay-operator"}  # the kuberay-operator chart's pod label
    assert admits(policy, operator, "kuberay-system", 8265) and not admits(policy, operator, "kuberay-system", 6379)
    assert not admits(policy, operator, "default", 8265)


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"]["containers"]


def _assert_hardened(pod_spec: dict[str, Any], containers: list[dict[str, Any]], what: str) -> None:
    assert pod_spec["securityContext"]["runAsNonRoot"] is True and pod_spec["securityContext"]["runAsUser"] == 10001
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, what
    emptydirs = {v["name"] for v in pod_spec["volumes"] if "emptyDir" in v}
    for container in containers:
        sc = container["securityContext"]
        assert {k: sc[k] for k in HARDENED} == HARDENED and sc["readOnlyRootFilesystem"] is True, what
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/tmp"] in emptydirs and mounts["/home/senet"] in emptydirs, what  # what a read-only root needs


def test_raycluster_runs_token_auth_with_our_secret_and_hardened_containers() -> None:
    cluster = manifest("raycluster.yaml")
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET[0]}
    for pod in pods(cluster):
        _assert_hardened(pod["spec"], _containers(pod), "raycluster")
        for container in _containers(pod):  # KubeRay sets RAY_AUTH_MODE/RAY_AUTH_TOKEN; never a literal token here
            assert not [e for e in container.get("env", []) if e["name"].startswith("RAY_AUTH") and "value" in e]
    autoscaler = cluster["spec"]["autoscalerOptions"]
    assert {k: autoscaler["securityContext"][k] for k in HARDENED} == HARDENED
    assert autoscaler["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in autoscaler["volumeMounts"]} == {"/tmp", "/home/senet"}  # the head pod's emptyDirs
    (head,) = _containers(cluster["spec"]["headGroupSpec"]["template"])
    env = {e["name"]: e for e in head["env"]}  # a RayJob's driver on the head records its flow run in Prefect
    ref = env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == PREFECT_AUTH_SECRET


def test_rayjob_submitter_is_hardened_and_may_reach_the_head() -> None:
    job = manifest("rayjob.yaml")
    template = job["spec"]["submitterPodTemplate"]
    (container,) = _containers(template)
    assert container["name"] == "ray-job-submitter" and "command" not in container  # KubeRay writes the command
    assert container["image"] == f"registry.example.com/senet-dist:{package_version()}"
    assert template["spec"]["restartPolicy"] == "Never"
    _assert_hardened(template["spec"], [container], "rayjob submitter")
    assert template["metadata"]["labels"] == {"senet.io/ray-client": "true"}
    header = (K8S / "rayjob.yaml").read_text().split("apiVersion:")[0]
    assert "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=" in header  # a submission by hand carries the token too


def test_flow_run_pods_get_the_secrets_by_reference_and_run_hardened() -> None:
    template = json.loads(WORK_POOL.read_text())["job_configuration"]["job_manifest"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    _assert_hardened(template["spec"], [container], "flow-run pod")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {k: (r["name"], r["key"]) for k, r in refs.items()} == {
        "RAY_AUTH_TOKEN": RAY_TOKEN_SECRET,
        "PREFECT_API_AUTH_STRING": PREFECT_AUTH_SECRET,
    }
    assert template["metadata"]["labels"] == {"senet.io/ray-client": "true"}  # admitted by the NetworkPolicy


def test_secrets_are_created_on_the_command_line_with_the_names_the_manifests_use() -> None:
    """No Secret in any file; the documented `kubectl create secret` commands make the secrets and keys referenced."""
    for path in K8S.glob("*.yaml"):
        assert "Secret" not in {d["kind"] for d in yaml.safe_load_all(path.read_text()) if d}, path.name
    commands = (K8S / "cluster-env.yaml").read_text() + (REPO / "prefect.yaml").read_text()
    created = set(re.findall(r"kubectl -n (\S+) create secret generic (\S+) --from-literal=([\w-]+)=", commands))
    assert {("senet", *RAY_TOKEN_SECRET), ("senet", *PREFECT_AUTH_SECRET), ("prefect", *PREFECT_AUTH_SECRET)} <= created
    assert "existingSecret=prefect-auth" in commands and "basicAuth.enabled=true" in commands  # both helm charts
    env = {d["kind"]: d for d in yaml.safe_load_all((K8S / "cluster-env.yaml").read_text())}["ConfigMap"]["data"]
    assert env["RAY_AUTH_MODE"] == "token"  # every senet pod with envFrom senet-env
