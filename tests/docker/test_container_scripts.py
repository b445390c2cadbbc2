"""docker/entrypoint.sh and docker/healthcheck.py, run for real on this machine (no Docker needed)."""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from tests.docker._compose import DOCKER
from tests.helpers import free_port

ENTRYPOINT = DOCKER / "entrypoint.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("senet_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = _load_healthcheck()


Answer = tuple[int, str]
# path -> (status, body), or {Authorization header value (None: no header): (status, body)} for a route behind auth
Routes = dict[str, Answer | dict[str | None, Answer]]


class _Routes(BaseHTTPRequestHandler):
    """Serves fixed (status, body) per path (and per Authorization header), like Ray's and Prefect's routes."""

    routes: Routes = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        answer = self.routes.get(self.path, (404, "not found"))
        if isinstance(answer, dict):
            answer = answer.get(self.headers.get("Authorization"), (401, "Unauthorized"))
        status, body = answer
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[int, Routes]]:
    routes: Routes = {}
    handler = type("Handler", (_Routes,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], routes
    finally:
        server.shutdown()
        server.server_close()


def test_ray_worker_healthy_only_when_raylet_reports_success(http_server, monkeypatch) -> None:
    port, routes = http_server
    monkeypatch.setenv("RAY_DASHBOARD_AGENT_LISTEN_PORT", str(port))
    routes["/api/local_raylet_healthz"] = (200, "success")
    assert hc.main(["ray-worker"]) == 0
    routes["/api/local_raylet_healthz"] = (503, "Local Raylet failed")
    assert hc.main(["ray-worker"]) == 1
    routes["/api/local_raylet_healthz"] = (200, "starting")
    assert hc.main(["ray-worker"]) == 1


def test_ray_head_needs_gcs_and_raylet(http_server, monkeypatch) -> None:
    port, routes = http_server
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_DASHBOARD_PORT", str(port))
    monkeypatch.setenv("RAY_DASHBOARD_AGENT_LISTEN_PORT", str(port))
    routes["/api/gcs_healthz"] = (200, "success")
    assert hc.main(["ray-head"]) == 1  # raylet route missing -> 404
    routes["/api/local_raylet_healthz"] = (200, "success")
    assert hc.main(["ray-head"]) == 0


def test_ray_head_started_with_token_auth_is_unhealthy_unless_the_dashboard_reports_token_mode(
    http_server, monkeypatch
) -> None:
    port, routes = http_server
    monkeypatch.setenv("RAY_DASHBOARD_PORT", str(port))
    monkeypatch.setenv("RAY_DASHBOARD_AGENT_LISTEN_PORT", str(port))
    routes["/api/gcs_healthz"] = routes["/api/local_raylet_healthz"] = (200, "success")
    routes["/api/authentication_mode"] = (200, '{"authentication_mode": "disabled"}')
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert hc.main(["ray-head"]) == 1  # started without auth although the node's environment asks for it
    routes["/api/authentication_mode"] = (200, '{"authentication_mode": "token"}')
    assert hc.main(["ray-head"]) == 0
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    routes["/api/authentication_mode"] = (200, '{"authentication_mode": "disabled"}')
    assert hc.main(["ray-head"]) == 0  # a head started without token auth is only checked for liveness


def test_prefect_server_with_an_auth_string_must_refuse_a_request_without_it(http_server, monkeypatch) -> None:
    port, routes = http_server
    monkeypatch.setenv("PREFECT_SERVER_API_PORT", str(port))
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:pw")
    routes["/api/health"] = (200, "true")  # public, as in Prefect
    routes["/api/admin/version"] = (200, '"3.9.1"')  # a server that answers anyone: auth is not in force
    assert hc.main(["prefect-server"]) == 1
    basic = "Basic " + base64.b64encode(b"admin:pw").decode()
    routes["/api/admin/version"] = {basic: (200, '"3.9.1"')}  # everything else: 401
    assert hc.main(["prefect-server"]) == 0
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:another")  # not the server's string
    assert hc.main(["prefect-server"]) == 1


def test_prefect_roles(http_server, monkeypatch) -> None:
    port, routes = http_server
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    for var in ("PREFECT_SERVER_API_PORT", "PREFECT_WORKER_WEBSERVER_PORT", "RAY_DASHBOARD_AGENT_LISTEN_PORT"):
        monkeypatch.setenv(var, str(port))
    routes["/api/health"] = (200, "true")
    assert hc.main(["prefect-server"]) == 0
    routes["/health"] = (200, '{"message": "OK"}')
    assert hc.main(["prefect-worker"]) == 1  # its Ray node is not up yet
    routes["/api/local_raylet_healthz"] = (200, "success")
    assert hc.main(["prefect-worker"]) == 0


def test_nothing_listening_is_unhealthy(monkeypatch, capsys) -> None:
    monkeypatch.setenv("PREFECT_SERVER_API_PORT", str(free_port()))
    assert hc.main(["prefect-server"]) == 1
    assert "prefect-server" in capsys.readouterr().err


def test_role_from_env_and_unknown_role(monkeypatch) -> None:
    monkeypatch.setenv("SENET_ROLE", "")
    assert hc.main([]) == 0  # driver: senet_dist is installed in this venv
    monkeypatch.setenv("SENET_ROLE", "ray-hed")
    assert hc.main([]) == 2


def test_healthcheck_runs_as_a_script() -> None:
    proc = subprocess.run([sys.executable, str(HEALTHCHECK), "driver"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "senet_dist importable" in proc.stdout


def _entrypoint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PREFECT_API_URL", "RAY_AUTH_MODE")}
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=30, env={**base, **(env or {})}
    )


def test_entrypoint_execs_plain_commands() -> None:
    proc = _entrypoint("echo", "hello from the container")
    assert proc.returncode == 0 and proc.stdout.strip() == "hello from the container"


def test_entrypoint_without_command_explains_roles() -> None:
    proc = _entrypoint()
    assert proc.returncode == 64 and "ray-head" in proc.stderr


@pytest.mark.parametrize(
    ("role", "missing"),
    [
        ("ray-worker", "RAY_ADDRESS"),
        ("prefect-worker", "RAY_ADDRESS"),
        ("prefect-deploy", "PREFECT_API_URL"),
        ("ray-driver", "RAY_ADDRESS"),
    ],
)
def test_entrypoint_roles_require_their_addresses(role: str, missing: str) -> None:
    proc = _entrypoint(role)
    assert proc.returncode == 64 and missing in proc.stderr


def test_ray_driver_needs_a_command() -> None:
    proc = _entrypoint("ray-driver", env={"RAY_ADDRESS": "ray-head:6379"})
    assert proc.returncode == 64 and "needs a command" in proc.stderr


def test_entrypoint_and_healthcheck_are_executable() -> None:
    """(shellcheck runs over every shell script in tests/test_shell_scripts.py)"""
    assert os.access(ENTRYPOINT, os.X_OK) and os.access(HEALTHCHECK, os.X_OK)


def test_compose_roles_exist_in_entrypoint_and_healthcheck() -> None:
    from tests.docker._compose import resolved_compose

    script = ENTRYPOINT.read_text()
    for name, svc in resolved_compose()["services"].items():
        if "build" not in svc or "entrypoint" in svc:  # an own entrypoint: its command is no role
            continue
        command = svc.get("command", [])
        if command and command[0] != "prefect":
            assert f"  {command[0]})" in script, f"{name}: role {command[0]} unknown to entrypoint.sh"
        check = svc.get("healthcheck", {}).get("test", [])
        if len(check) > 2 and check[1] == "senet-healthcheck":
            assert check[2] in hc.CHECKS, f"{name}: healthcheck role {check[2]} unknown"
    assert Path(HEALTHCHECK).read_text().startswith("#!/usr/bin/env python3")
