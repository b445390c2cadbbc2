"""Fixtures shared by every test package; plain helper functions are in tests/helpers.py.

- environment defaults for Ray and Prefect, set once for the whole session (before any test module imports them);
- one local Ray for the session: ``local_ray`` owns it; tests ask for ``ray_up`` (per test) or ``ray_session`` (per
  module, for module-scoped fixtures), which start it again if a ``ray_down`` test stopped it;
- ``s3_server`` / ``s3_bucket``: a real S3 endpoint on loopback (tests/s3server.py).

A sub-package conftest holds only what is local to that package (which slice of data it uses, its own tallies).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.s3server import S3Server

ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
for _k, _v in ENV_DEFAULTS.items():
    os.environ.setdefault(_k, _v)


# ---- Ray -------------------------------------------------------------------------------------------
def _ensure_local_ray():
    """Start the session's local Ray unless one is running in this process; returns the ``ray`` module."""
    import ray

    from senet_dist.train.launcher import QUIET_ENV

    if not ray.is_initialized():
        # 2 training workers + Ray Train's controller on logical CPUs (the box has 2 cores).
        ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": dict(QUIET_ENV)})
    return ray


@pytest.fixture(scope="session")
def local_ray():
    """The one local Ray of the session: started on first use, shut down at the end of the session.

    Prefer ``ray_up`` / ``ray_session`` in tests: they also restart it after a ``ray_down`` test stopped it.
    """
    ray = _ensure_local_ray()
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture()
def ray_up(local_ray):
    """The session's local Ray, running for this test; returns the ``ray`` module."""
    return _ensure_local_ray()


@pytest.fixture(scope="module")
def ray_session(local_ray):
    """``ray_up`` for module-scoped fixtures (e.g. tests/train's ``fitted``); returns the ``ray`` module."""
    return _ensure_local_ray()


@pytest.fixture()
def ray_down():
    """No Ray in this process, so a test can assert that bad input never starts one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    assert not ray.is_initialized(), "the call under test started Ray"


# ---- S3 --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``moto_server`` on a free 127.0.0.1 port, started on first use and stopped at the end of the session."""
    from tests.s3server import start_server, stop_server

    server, proc = start_server(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        yield server
    finally:
        stop_server(proc)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the AWS_* environment points at the server for this test. Returns the bucket name."""
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name
