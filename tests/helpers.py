"""Plain helpers shared by the test packages (fixtures live in tests/conftest.py).

Import them as ``from tests.helpers import free_port, wait_until, ...``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

T = TypeVar("T")


# ---- ports and waiting -----------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server to start on, or to find closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.1,
               proc: subprocess.Popen | None = None) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    Raises ``TimeoutError`` after ``timeout`` s, or ``RuntimeError`` as soon as ``proc`` (the process that should make
    the predicate true) has exited; both messages name ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode} first")
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout:g}s")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 2xx; False when it refuses, times out or answers an error status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except OSError:  # URLError, HTTPError, ConnectionRefusedError, timeouts
        return False


def wait_until_healthy(url: str, timeout: float, what: str, *, interval: float = 0.1,
                       proc: subprocess.Popen | None = None) -> None:
    """Wait until GET ``url`` answers 2xx (see ``wait_until``; ``proc`` is the server process)."""
    wait_until(lambda: http_ok(url), timeout, f"{what} healthy at {url}", interval=interval, proc=proc)
