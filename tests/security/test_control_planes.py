"""The control planes with authentication on, for real: a Prefect server started with an auth string and a Ray head
started with token auth, each a subprocess with its own home, ports and temp dir on loopback.

- Prefect: a client without ``PREFECT_API_AUTH_STRING`` (or with a wrong one) is refused with 401; with it, it writes
  and reads through the API; the image's health check passes only while the server enforces the string.
- Ray: a driver without the token, or with a wrong one, is refused with Ray's authentication error; with it, a plain
  driver runs a task and senet-dist's ``RaySession`` joins the cluster without turning auth off (its driver and the
  task both keep ``RAY_AUTH_MODE=token``). The local Ray a session starts itself runs with auth disabled and writes
  no token.

Every process is stopped by its own process group at the end (never ``ray stop``: it would end every Ray process of
the machine, other tests' included)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, stop_process, wait_until, wait_until_healthy

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.timeout(240)]
BIN = Path(sys.executable).parent
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
PREFECT_AUTH = f"senet:{secrets.token_hex(16)}"
RAY_TOKEN = secrets.token_hex(32)
# Ray's address and auth settings a test process must not inherit from the machine's environment (nor any PREFECT_).
_INHERITED = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without those, with ``home`` as HOME (no ~/.ray/auth_token), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED and not k.startswith("PREFECT_")}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", **extra}


# ---- Ray: token auth --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RayHead:
    address: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A process environment with no token anywhere (no RAY_AUTH_*, an empty HOME) plus ``extra``."""
        return _clean_env(self.home, **extra)


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM to the head's whole process group (ray start --block and the GCS, raylet, ... it started), then
    SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """`ray start --head --block` with RAY_AUTH_MODE=token and a token, on loopback, its own temp dir and ports."""
    root = tmp_path_factory.mktemp("ray-auth")
    home = root / "home"
    home.mkdir()
    port = free_port()
    env = _clean_env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    args = [
        *("--head", "--block", "--disable-usage-stats", "--include-dashboard", "false", "--num-cpus", "1"),
        *("--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", str(root / "ray")),
        *("--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())),
    ]
    with open(root / "head.log", "w") as log:
        head = subprocess.Popen(
            [BIN / "ray", "start", *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: _listening(port), 60, "Ray head GCS port", interval=0.2, proc=head)
        yield RayHead(f"127.0.0.1:{port}", home)
    finally:
        _stop_group(head)
    assert not _listening(port), "the Ray head still listens after its process group was stopped"


DRIVER = """
import os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("task ran:", ray.get(ray.remote(lambda: 40 + 2).remote(), timeout=60))
"""
# A plain driver first, then senet-dist's session joining the same cluster (RAY_ADDRESS), in one process.
SESSION = """
import os, ray
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
print("plain driver task:", ray.get(ray.remote(lambda: 40 + 2).remote(), timeout=60))
ray.shutdown()
from senet_dist.train.session import RaySession
with RaySession() as session:
    assert not session.started and not session.fixed_size
    task_mode = ray.get(ray.remote(lambda: os.environ.get("RAY_AUTH_MODE")).remote(), timeout=60)
    print("session driver:", os.environ["RAY_AUTH_MODE"], "task:", task_mode)
print("after the session:", os.environ["RAY_AUTH_MODE"])
"""


def _start(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -c code args`` in the repo, its stdout and stderr together."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(*procs: subprocess.Popen[str], timeout: float) -> list[tuple[int, str]]:
    """(exit code, output) of each process; one still running after ``timeout`` s is killed (and the test fails)."""
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
        return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_driver_without_the_token_or_with_a_wrong_one_is_refused(ray_head: RayHead) -> None:
    fail_fast = {"RAY_gcs_server_port_wait_time_s": "1"}  # one connection attempt instead of ~20 s of retries
    cases = {
        "no token": ray_head.env(**fail_fast),
        "wrong token": ray_head.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token", **fail_fast),
    }
    results = _finish(*(_start(DRIVER, ray_head.address, env=env) for env in cases.values()), timeout=120)
    for name, (code, out) in zip(cases, results, strict=True):  # both at once: each spends its time importing Ray
        assert code != 0 and "task ran" not in out, name
        assert "AuthenticationError" in out and "InvalidAuthToken" in out, f"{name}: {out[-2000:]}"


LOCAL = """
import os, ray
from senet_dist.train.session import RaySession
with RaySession(num_cpus=1) as session:
    assert session.started
    print("local:", os.environ["RAY_AUTH_MODE"], ray.get(ray.remote(lambda: 40 + 2).remote(), timeout=60))
print("after:", os.environ.get("RAY_AUTH_MODE"))
"""


def test_a_ray_session_keeps_a_clusters_token_auth_and_disables_auth_only_for_its_own_local_ray(
    ray_head: RayHead, tmp_path: Path
) -> None:
    joined = ray_head.env(RAY_ADDRESS=ray_head.address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN)
    local = _clean_env(tmp_path)  # no RAY_AUTH_MODE: Ray's own default for a new local Ray would be token auth
    procs = _start(SESSION, env=joined), _start(LOCAL, env=local)  # at once: each spends seconds on imports
    (join_rc, join_out), (local_rc, local_out) = _finish(*procs, timeout=180)
    assert join_rc == 0, join_out[-3000:]
    assert "plain driver task: 42" in join_out
    assert "session driver: token task: token" in join_out  # nothing shipped RAY_AUTH_MODE=disabled to workers
    assert "after the session: token" in join_out
    assert local_rc == 0, local_out[-3000:]
    assert "local: disabled 42" in local_out and "after: None" in local_out  # for that Ray only, then restored
    assert not (tmp_path / ".ray" / "auth_token").exists()


# ---- Prefect: server auth string, client auth string -----------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real `prefect server start` (SQLite in its own PREFECT_HOME) with PREFECT_SERVER_API_AUTH_STRING set,
    started when the module starts so that it comes up while the Ray tests run; ``prefect_api`` waits for it."""
    home = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    env = _clean_env(
        home,
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_API_AUTH_STRING=PREFECT_AUTH,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen(
            [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield server, f"http://127.0.0.1:{port}/api"
    finally:
        stop_process(server)


@pytest.fixture(scope="module")
def prefect_api(prefect_server: tuple[subprocess.Popen, str]) -> str:
    server, api = prefect_server
    wait_until_healthy(f"{api}/health", 120, "prefect server with auth", interval=0.5, proc=server)
    return api


def _status(url: str, auth: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_prefect_api_refuses_requests_without_the_right_auth_string(prefect_api: str) -> None:
    assert _status(f"{prefect_api}/health") == 200  # the probe route stays public
    assert _status(f"{prefect_api}/flows/filter", body={}) == 401
    assert _status(f"{prefect_api}/flows/filter", auth="senet:wrong", body={}) == 401
    assert _status(f"{prefect_api}/flows/filter", auth=PREFECT_AUTH, body={}) == 200


def test_prefect_client_is_refused_without_the_auth_string_and_works_with_it(prefect_api: str) -> None:
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_api}, restore_defaults={PREFECT_API_AUTH_STRING}),
        get_client(sync_client=True) as client,
        pytest.raises(httpx.HTTPStatusError) as refused,
    ):
        client.create_flow_from_name("control-plane-check")
    assert refused.value.response.status_code == 401

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_api, PREFECT_API_AUTH_STRING: PREFECT_AUTH}),
        get_client(sync_client=True) as client,
    ):
        flow_id = client.create_flow_from_name("control-plane-check")
        assert client.read_flow(flow_id).name == "control-plane-check"


def _healthcheck():
    spec = importlib.util.spec_from_file_location("senet_healthcheck_auth", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_images_prefect_health_check_passes_only_with_the_servers_auth_string(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hc = _healthcheck()
    monkeypatch.setenv("PREFECT_SERVER_API_PORT", str(urllib.parse.urlsplit(prefect_api).port))
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", PREFECT_AUTH)
    assert hc.check_prefect_server()[0]
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "senet:not-the-servers")
    ok, msg = hc.check_prefect_server()
    assert not ok and "401" in msg
