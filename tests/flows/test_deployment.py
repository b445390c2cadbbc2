"""Through a REAL Prefect server (SQLite) and process worker: deploy prefect.yaml, `prefect deployment run
train-senet/quickstart`, then the data-change trigger `check-data/on-data-change` (skips, then retrains on change)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from senet_dist.artifacts import ArtifactStore
from tests.helpers import REPO, free_port, wait_until_healthy

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent
TINY = {
    "train": {"epochs": 1, "num_workers": 2, "batch_size": 8, "image_size": 32, "loader_workers": 0},
    "variants": ["se_resnet_tiny"],
    "shard": {"max_count": 8},
}


@pytest.fixture()
def prefect_server(tmp_path):
    """A real `prefect server start` and `prefect worker start --pool local-pool`, stopped worker-first."""
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
    procs = [server]
    try:
        wait_until_healthy(api + "/health", 120, "prefect server", interval=1, proc=server)

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [BIN / "prefect", *args], env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=300
            )

        run("work-pool", "create", "local-pool", "--type", "process")
        run("deploy", "--no-prompt", "--all")
        worker = subprocess.Popen(
            [BIN / "prefect", "worker", "start", "--pool", "local-pool"],
            env=env,
            cwd=REPO,
            stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT,
        )
        procs.insert(0, worker)
        yield env, run, logs
    finally:
        for p in procs:  # worker first: a worker whose server is gone hangs on SIGTERM
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _deployment_run(run, name: str, params: dict) -> subprocess.CompletedProcess:
    return run("deployment", "run", name, "--params", json.dumps(params), "--watch", "--watch-timeout", "600")


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


def test_deployment_run_and_data_change_trigger(prefect_server, lfw_source, tmp_path):
    env, run, logs = prefect_server
    src = tmp_path / "src"
    import shutil

    shutil.copytree(lfw_source, src)
    params = {"data": str(src), "shards": str(tmp_path / "shards"), "artifacts": str(tmp_path / "artifacts"), **TINY}
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
    _deployment_run(run, "check-data/on-data-change", trigger)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = _latest_flow_run_state(env, "train-senet")
        if len(states) == 2 and states[0] in ("Completed", "Failed", "Crashed"):
            break
        time.sleep(3)
    assert states[0] == "Completed", (logs / "worker.log").read_text()[-4000:]
    completed = [r for r in store.runs_latest().to_pylist() if r["status"] == "completed"]
    assert len({r["dataset_fingerprint"] for r in completed}) == 2
