"""Fixtures shared by every test package; plain helper functions are in tests/helpers.py.

- environment defaults for Ray and Prefect, set once for the whole session (before any test module imports them);
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
