"""Through a REAL Prefect server (SQLite): create the work pools as prefect.yaml says, deploy prefect.yaml, check what
the server registered for every deployment; then, with a process worker, `prefect deployment run
train-senet/quickstart` and the data-change trigger `check-data/on-data-change` (skips, then retrains on change)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from senet_dist.artifacts import ArtifactStore
from tests.helpers import REPO, free_port, stop_process, wait_until_healthy

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent
TINY = {
    "train": {"epochs": 1, "num_workers": 2, "batch_size": 8, "image_size": 32, "loader_workers": 0},
    "variants": ["se_resnet_tiny"],
    "shard": {"max_count": 8},
}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real `prefect server start`, the work pools created by scripts/work-pools.sh (as prefect.yaml says), and
    `prefect deploy --all` of this repo's prefect.yaml."""
    tmp_path = tmp_path_factory.mktemp("prefect")
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    env["PREFECT_API_URL"] = api = f"http://127.0.0.1:{port}/api"
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_healthy(api + "/health", 120, "prefect server", interval=1, proc=server)

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [BIN / "prefect", *args], env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=300
            )

        for _ in range(2):  # the second time every pool exists already: the script leaves them alone
            subprocess.run(
                ["bash", REPO / "scripts" / "work-pools.sh"], env=env, check=True, capture_output=True, timeout=300
            )
        run("deploy", "--no-prompt", "--all")
        yield env, run, logs
    finally:
        stop_process(server)


@pytest.fixture()
def process_worker(prefect_server, tmp_path_factory):
    """`prefect worker start --pool local-pool`, stopped before the server (a worker whose server is gone hangs on
    SIGTERM). Its environment is the operator's: runs may write under the tests' temporary directories only
    (SENET_ALLOWED_ROOTS), as a deployment's job variables would say."""
    env, run, logs = prefect_server
    worker = subprocess.Popen(
        [BIN / "prefect", "worker", "start", "--pool", "local-pool"],
        env={**env, "SENET_ALLOWED_ROOTS": str(tmp_path_factory.getbasetemp())},
        cwd=REPO,
        stdout=open(logs / "worker.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield prefect_server
    finally:
        stop_process(worker)


def _read_from_server(env, code: str):
    """Run ``code`` (it prints one JSON document) against the test server; returns the parsed document."""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


DEPLOYMENTS_AS_JSON = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c:
    out = {}
    for d in c.read_deployments():
        flow = c.read_flow(d.flow_id).name
        out[f"{flow}/{d.name}"] = {
            "entrypoint": d.entrypoint, "work_pool": d.work_pool_name, "pull_steps": d.pull_steps,
            "parameters": d.parameters, "job_variables": d.job_variables,
            "schedules": [{**s.schedule.model_dump(mode="json", exclude={"anchor_date"}), "active": s.active}
                          for s in d.schedules],
        }
    pools = {p.name: {"type": p.type, "base_job_template": p.base_job_template} for p in c.read_work_pools()}
    print(json.dumps({"deployments": out, "pools": pools}))
"""
IN_REPO = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
IN_IMAGE = [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]
# deployment -> (entrypoint, work pool, pull steps): a process worker runs flows from the repo (where `prefect deploy`
# ran); Docker and Kubernetes flow runs start in the image, whose code is in /app.
EXPECTED = {
    "train-senet/quickstart": ("flows/train_senet.py:train_senet", "local-pool", IN_REPO),
    "train-senet/fashion-mnist": ("flows/train_senet.py:train_senet", "local-pool", IN_REPO),
    "check-data/on-data-change": ("flows/check_data.py:check_data", "local-pool", IN_REPO),
    "train-senet/gpu-host": ("flows/train_senet.py:train_senet", "senet-docker", IN_IMAGE),
    "train-senet/gpu-cluster": ("flows/train_senet.py:train_senet", "senet-k8s", IN_IMAGE),
}
TEMPLATES = {
    "senet-docker": ("docker", "work-pool-docker.json"),
    "senet-k8s": ("kubernetes", "work-pool-kubernetes.json"),
}


@pytest.fixture(scope="module")
def registered(prefect_server) -> dict:
    return _read_from_server(prefect_server[0], DEPLOYMENTS_AS_JSON)


def _declared() -> dict[str, dict]:
    """prefect.yaml's deployments by FLOW/NAME (the flow name from the entrypoint's function)."""
    flows = {"train_senet": "train-senet", "check_data": "check-data"}
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {f"{flows[d['entrypoint'].rsplit(':', 1)[1]]}/{d['name']}": d for d in spec["deployments"]}


def test_every_deployment_is_registered_with_its_entrypoint_pool_and_pull_steps(registered) -> None:
    deployments = registered["deployments"]
    assert set(deployments) == set(EXPECTED) == set(_declared())
    for name, (entrypoint, pool, pull) in EXPECTED.items():
        got = deployments[name]
        assert (got["entrypoint"], got["work_pool"], got["pull_steps"]) == (entrypoint, pool, pull), name


def test_parameters_and_schedules_are_registered_as_declared_and_leave_storage_to_the_environment(registered) -> None:
    from senet_dist.pipeline import PipelineConfig

    for name, declared in _declared().items():
        got = registered["deployments"][name]
        assert got["parameters"] == declared.get("parameters", {}), name
        assert "artifacts" not in got["parameters"], f"{name}: storage comes from $SENET_ARTIFACTS"
        if name.startswith("train-senet/"):  # every value is a valid pipeline config (no default repeated wrongly)
            PipelineConfig.parse(got["parameters"])
        want = [
            {("cron" if "cron" in s else "interval"): s.get("cron", s.get("interval")), "active": s["active"]}
            for s in declared.get("schedules", [])
        ]
        assert [{k: s[k] for k in ("cron", "interval", "active") if k in s} for s in got["schedules"]] == want, name
    quickstart = registered["deployments"]["train-senet/quickstart"]["schedules"]
    assert quickstart == [{"cron": "0 3 * * 1", "timezone": "UTC", "day_or": True, "active": False}]


def test_work_pools_use_the_base_job_templates_kept_in_the_repo(registered) -> None:
    pools = registered["pools"]
    assert pools["local-pool"]["type"] == "process"
    for pool, (kind, file) in TEMPLATES.items():
        assert pools[pool]["type"] == kind
        assert pools[pool]["base_job_template"] == json.loads((REPO / "docker" / "k8s" / file).read_text())


def _render(pool: str, job_variables: dict) -> dict:
    """The job configuration a worker of ``pool`` builds from the deployment's job variables (Prefect's templating)."""
    from prefect.utilities.templating import apply_values

    template = json.loads((REPO / "docker" / "k8s" / TEMPLATES[pool][1]).read_text())
    props = template["variables"]["properties"]
    values = {k: v["default"] for k, v in props.items() if "default" in v} | job_variables
    assert set(job_variables) <= set(props), f"{pool}: unknown job variables {set(job_variables) - set(props)}"
    return apply_values(template["job_configuration"], values)


def test_the_kubernetes_flow_run_pod_runs_the_image_as_a_ray_driver_with_storage_from_the_cluster(registered) -> None:
    job = _render("senet-k8s", registered["deployments"]["train-senet/gpu-cluster"]["job_variables"])
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/senet-dist:0.1.0"
    assert container["args"].split()[:2] == ["senet-entrypoint", "ray-driver"]
    assert container["args"].endswith("prefect flow-run execute")
    assert container["resources"] == {
        "limits": {"cpu": "2", "memory": "8Gi"},
        "requests": {"cpu": "2", "memory": "8Gi"},
    }
    assert {"configMapRef": {"name": "senet-env"}} in container["envFrom"]  # SENET_ARTIFACTS, RAY_ADDRESS
    assert {"secretRef": {"name": "senet-s3"}} in container["envFrom"]
    assert container["volumeMounts"] == [
        {"name": "shards", "mountPath": "/app/data"},
        {"name": "tmp", "mountPath": "/tmp"},  # the root filesystem is read-only
        {"name": "home", "mountPath": "/home/senet"},
    ]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "senet-shards"
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # the Ray token and Prefect's auth string from Secrets (docs/security.md); RAY_AUTH_MODE=token is in senet-env
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]} == {
        "RAY_AUTH_TOKEN": "senet-ray-token",
        "PREFECT_API_AUTH_STRING": "prefect-auth",
    }
    assert job["job_manifest"]["spec"]["template"]["metadata"]["labels"] == {"senet.io/ray-client": "true"}
    assert job["env"]["RAY_ADDRESS"].endswith(":6379") and job["namespace"] == "senet"


def test_the_docker_flow_run_container_joins_the_compose_stack(registered) -> None:
    job = _render("senet-docker", registered["deployments"]["train-senet/gpu-host"]["job_variables"])
    assert job["image"] == "senet-dist:0.1.0" and job["command"].split()[:2] == ["senet-entrypoint", "ray-driver"]
    assert job["networks"] == ["senet_default"] and "senet_shards:/app/data" in job["volumes"]
    assert job["env"]["RAY_ADDRESS"] == "ray-head:6379" and job["env"]["SENET_ARTIFACTS"].startswith("s3://")
    assert job["env"]["RAY_AUTH_MODE"] == "token"  # the stack's Ray; the token as a file, never in the job's env
    assert f"/etc/senet/ray-token:{job['env']['RAY_AUTH_TOKEN_PATH']}:ro" in job["volumes"]
    assert "RAY_AUTH_TOKEN" not in job["env"] and job["privileged"] is False
    assert job["mem_limit"] == "16g"
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    assert (
        compose["name"] == "senet" and "shards" in compose["volumes"]
    )  # Compose names them senet_default, senet_shards


def _deployment_run(run, name: str, params: dict) -> subprocess.CompletedProcess:
    return run("deployment", "run", name, "--params", json.dumps(params), "--watch", "--watch-timeout", "600")


def run_unchecked(run, name: str, params: dict) -> subprocess.CompletedProcess:
    try:
        return _deployment_run(run, name, params)
    except subprocess.CalledProcessError as exc:
        return subprocess.CompletedProcess(exc.cmd, exc.returncode, exc.stdout, exc.stderr)


def _latest_flow_run_state(env, flow_name: str) -> list[str]:
    code = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import FlowFilter, FlowFilterName\n"
        "from prefect.client.schemas.sorting import FlowRunSort\n"
        "with get_client(sync_client=True) as c:\n"
        f"    runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=['{flow_name}'])),"
        " sort=FlowRunSort.START_TIME_DESC)\n"
        "    print('\\n'.join(r.state.name for r in runs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_deployment_run_and_data_change_trigger(process_worker, lfw_source, tmp_path):
    env, run, logs = process_worker
    src = tmp_path / "src"
    import shutil

    shutil.copytree(lfw_source, src)
    params = {"data": str(src), "shards": str(tmp_path / "shards"), "artifacts": str(tmp_path / "artifacts"), **TINY}
    # Whoever may start a deployment may set its parameters, not where results go: refused before any work.
    elsewhere = run_unchecked(run, "train-senet/quickstart", {**params, "artifacts": "s3://someone-elses-bucket/x"})
    assert elsewhere.returncode != 0 and "outside this deployment's roots" in (logs / "worker.log").read_text()
    assert not (tmp_path / "shards").exists()  # not even sharded
    other = run_unchecked(
        run, "check-data/on-data-change", {"data": str(src), "deployment": "check-data/on-data-change"}
    )
    assert other.returncode != 0 and "is not one of this project's" in (logs / "worker.log").read_text()
    try:
        out = _deployment_run(run, "train-senet/quickstart", params)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{exc.stdout}\n{exc.stderr}\n{(logs / 'worker.log').read_text()[-4000:]}")
    assert "Completed" in out.stdout
    store = ArtifactStore(str(tmp_path / "artifacts"))
    assert [r["status"] for r in store.runs_latest().to_pylist()] == ["completed"]

    trigger = {
        "data": str(src),
        "shards": str(tmp_path / "shards"),
        "shard": TINY["shard"],
        "deployment": "train-senet/quickstart",
        "parameters": params,
    }
    out = _deployment_run(run, "check-data/on-data-change", trigger)
    assert "Unchanged" in out.stdout  # no change: the trigger does not start training

    Image.fromarray(np.full((25, 25), 200, dtype=np.uint8)).save(sorted((src / "face").iterdir())[0])
    before = len(_latest_flow_run_state(env, "train-senet"))  # the refused run and the first real one
    _deployment_run(run, "check-data/on-data-change", trigger)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = _latest_flow_run_state(env, "train-senet")
        if len(states) == before + 1 and states[0] in ("Completed", "Failed", "Crashed"):
            break
        time.sleep(3)
    assert states[0] == "Completed", (logs / "worker.log").read_text()[-4000:]
    completed = [r for r in store.runs_latest().to_pylist() if r["status"] == "completed"]
    assert len({r["dataset_fingerprint"] for r in completed}) == 2
