"""A real S3 HTTP endpoint on loopback for tests: moto's server mode (``moto_server``).

No MinIO server binary is installable here (PyPI's ``minio`` is only the client SDK and Debian ships only
MinIO's Go libraries; Debian's rclone 1.60 predates ``rclone serve s3``), so moto's server stands in: it
speaks the S3 REST protocol over HTTP, and pyarrow's C++ S3 client talks to it exactly as to AWS or MinIO.

Import the fixtures into a test module: ``from s3server import s3_server, s3_bucket``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials; these never leave loopback


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        fs = pafs.S3FileSystem(endpoint_override=self.endpoint.split("://", 1)[1], scheme="http",
                               region="us-east-1", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                               allow_bucket_creation=True)
        fs.create_dir(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    pytest.skip("moto_server not installed (pip install 'moto[server]')")
    raise AssertionError("unreachable")


def _wait_healthy(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server at {endpoint} not healthy after {timeout:.0f}s")


_SHARED: dict[str, object] = {"server": None, "proc": None, "users": 0}


def _start(log: Path) -> tuple[S3Server, subprocess.Popen[bytes]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*_moto_server_cmd(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = S3Server(f"http://127.0.0.1:{port}")
    try:
        _wait_healthy(server.endpoint, proc)
    except BaseException:
        _stop(proc)
        raise
    return server, proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``moto_server`` on a free 127.0.0.1 port, stopped at the end of the session.

    Every test module that imports this fixture gets its own session-scoped copy from pytest; the
    reference count makes them share one server process.
    """
    if _SHARED["server"] is None:
        _SHARED["server"], _SHARED["proc"] = _start(tmp_path_factory.mktemp("moto") / "server.log")
    _SHARED["users"] = int(_SHARED["users"]) + 1  # type: ignore[call-overload]
    try:
        yield _SHARED["server"]  # type: ignore[misc]
    finally:
        _SHARED["users"] = int(_SHARED["users"]) - 1  # type: ignore[call-overload]
        if _SHARED["users"] == 0:
            _stop(_SHARED["proc"])  # type: ignore[arg-type]
            _SHARED["server"] = _SHARED["proc"] = None


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
