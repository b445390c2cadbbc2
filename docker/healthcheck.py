#!/usr/bin/env python3
"""Container health check for every role the senet-dist image plays (installed as ``senet-healthcheck``).

Why a script instead of ``curl`` in each compose entry: the CUDA base image ships no curl/wget, and each role
has its own liveness endpoint (Ray's GCS/raylet health routes, Prefect's ``/api/health``, the Prefect
worker's ``--with-healthcheck`` server). Standard library only, so it runs in any image with Python.

A control plane started with authentication must keep it: the Ray head is unhealthy when it was started with
``RAY_AUTH_MODE=token`` but its dashboard reports another mode, and the Prefect server is unhealthy unless it refuses
a request without ``PREFECT_SERVER_API_AUTH_STRING`` and accepts one with it (docs/security.md). The health routes
themselves are public in both (probes carry no secrets).

Usage: ``senet-healthcheck [ROLE]``; ROLE defaults to ``$SENET_ROLE``. Exit 0 = healthy, 1 = unhealthy,
2 = unknown role.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

TIMEOUT_S = 5.0
# Ports are read when a check runs (env var, default): the same names Ray and Prefect use for their settings.
DEFAULT_PORTS = {
    "RAY_DASHBOARD_PORT": 8265,
    "RAY_DASHBOARD_AGENT_LISTEN_PORT": 52365,
    "PREFECT_SERVER_API_PORT": 4200,
    "PREFECT_WORKER_WEBSERVER_PORT": 8080,
}


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """(status, first 4 KiB of the body) of GET ``url``; an error status is an answer too. Raises OSError when
    nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never send 127.0.0.1 via a proxy
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as resp:  # noqa: S310 - fixed local URLs only
            return resp.status, resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(4096).decode("utf-8", "replace")


def http_ok(
    url: str,
    expect: str | None = None,
    timeout: float = TIMEOUT_S,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> tuple[bool, str]:
    """GET ``url``; healthy when it answers ``status`` and the body contains ``expect`` (if given)."""
    try:
        got, body = http_get(url, headers, timeout)
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"
    if got != status:
        return False, f"{url}: HTTP {got}, expected {status}"
    if expect is not None and expect not in body:
        return False, f"{url}: body lacks {expect!r}: {body[:200]!r}"
    return True, f"{url}: ok"


def _local(port_var: str, path: str) -> str:
    port = os.environ.get(port_var) or str(DEFAULT_PORTS[port_var])
    if not port.isdigit():
        raise ValueError(f"{port_var} must be a port number, got {port!r}")
    return f"http://127.0.0.1:{port}{path}"


def check_raylet() -> tuple[bool, str]:
    """The local raylet, through the dashboard agent (the probe KubeRay uses too)."""
    return http_ok(_local("RAY_DASHBOARD_AGENT_LISTEN_PORT", "/api/local_raylet_healthz"), expect="success")


def check_ray_head() -> tuple[bool, str]:
    """GCS liveness (dashboard), token auth in force when this node was started with it, plus the head's raylet."""
    ok, msg = http_ok(_local("RAY_DASHBOARD_PORT", "/api/gcs_healthz"), expect="success")
    if ok and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        ok, msg = http_ok(_local("RAY_DASHBOARD_PORT", "/api/authentication_mode"), expect='"token"')
    return (ok, msg) if not ok else check_raylet()


def check_prefect_server() -> tuple[bool, str]:
    """The API answers; with an auth string configured, it refuses a request without it and accepts it."""
    ok, msg = http_ok(_local("PREFECT_SERVER_API_PORT", "/api/health"))
    auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    if not ok or not auth:
        return ok, msg
    url = _local("PREFECT_SERVER_API_PORT", "/api/admin/version")  # any route behind the auth check
    ok, msg = http_ok(url, status=401)
    if not ok:
        return False, f"{msg} (a request without the auth string must be refused)"
    basic = base64.b64encode(auth.encode()).decode()
    return http_ok(url, headers={"Authorization": f"Basic {basic}"})


def check_prefect_worker() -> tuple[bool, str]:
    """The worker's poll loop is alive and this container's Ray node (the flow's driver) is up."""
    ok, msg = http_ok(_local("PREFECT_WORKER_WEBSERVER_PORT", "/health"))
    return (ok, msg) if not ok else check_raylet()


def check_package() -> tuple[bool, str]:
    """One-off driver containers: the package is importable (find_spec only, so torch is not loaded)."""
    found = importlib.util.find_spec("senet_dist") is not None
    return found, "senet_dist importable" if found else "senet_dist is not installed"


CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {
    "ray-head": check_ray_head,
    "ray-worker": check_raylet,
    "ray-driver": check_raylet,
    "prefect-server": check_prefect_server,
    "prefect-worker": check_prefect_worker,
    "driver": check_package,
    "": check_package,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    role = args[0] if args else os.environ.get("SENET_ROLE", "")
    check = CHECKS.get(role)
    if check is None:
        print(f"unknown role {role!r}; expected one of {sorted(r for r in CHECKS if r)}", file=sys.stderr)
        return 2
    ok, msg = check()
    print(f"{role or 'driver'}: {msg}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
