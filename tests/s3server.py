"""A real S3 HTTP endpoint on loopback for tests: moto's server mode (``moto_server``).

No MinIO server binary is installable here (PyPI's ``minio`` is only the client SDK and Debian ships only
MinIO's Go libraries; Debian's rclone 1.60 predates ``rclone serve s3``), so moto's server stands in: it
speaks the S3 REST protocol over HTTP, and pyarrow's C++ S3 client talks to it exactly as to AWS or MinIO.

The ``s3_server`` (session) and ``s3_bucket`` fixtures are in tests/conftest.py; ask for them by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.helpers import free_port, stop_process, wait_until_healthy

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials; these never leave loopback


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        fs = pafs.S3FileSystem(
            endpoint_override=self.endpoint.split("://", 1)[1],
            scheme="http",
            region="us-east-1",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            allow_bucket_creation=True,
        )
        fs.create_dir(name)


def _moto_server_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    pytest.skip("moto_server not installed (pip install 'moto[server]')")
    raise AssertionError("unreachable")


def start_server(log: Path, extra_env: dict[str, str] | None = None) -> tuple[S3Server, subprocess.Popen[bytes]]:
    """``moto_server`` on a free 127.0.0.1 port, healthy (its log goes to ``log``). ``extra_env`` e.g.
    ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}``: moto then checks every request's credentials, as AWS does."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | (extra_env or {})
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [*_moto_server_cmd(), "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    server = S3Server(f"http://127.0.0.1:{port}")
    try:
        wait_until_healthy(f"{server.endpoint}/moto-api/", 30, "moto_server", interval=0.1, proc=proc)
    except BaseException:
        stop_server(proc)
        raise
    return server, proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)
