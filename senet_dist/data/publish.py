"""Publishing a dataset version so that readers only ever see complete ones.

Local OUT: everything is written into a temp build dir inside OUT, renamed to ``vNNNN-<fp12>`` (atomic), then LATEST
is replaced (atomic). Object storage has no rename: shards are uploaded as each group completes, then
manifest.parquet, rejected.parquet, dataset.json, and LATEST last. Listing requires dataset.json and LATEST names a
version only after it, so a killed run leaves at most an unlisted version directory that the next run reuses.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path

from senet_dist.storage import join

from .manifest import VERSION_RE, list_versions, version_names
from .writer import upload

log = logging.getLogger(__name__)
BUILD_PREFIX = ".tmp-build-"
TABLE_FILES = ("manifest.parquet", "rejected.parquet", "dataset.json")  # uploaded in this order, after the shards


def version_name(number: int, fingerprint: str) -> str:
    return f"v{number:04d}-{fingerprint[:12]}"


def next_local_version(out: Path, fingerprint: str) -> str:
    """The name a new local version gets: one past the newest complete version."""
    numbers = [int(VERSION_RE.match(Path(p).name).group(1)) for p in list_versions(out)]  # type: ignore[union-attr]
    return version_name(1 + max(numbers, default=0), fingerprint)


def next_remote_version(out: str, fingerprint: str) -> str:
    """The name a new remote version gets, fixed before any upload: an unlisted (killed) version of the same content
    is reused (its objects are overwritten with identical ones), else one past every version directory there."""
    names = version_names(out)
    complete = {Path(p).name for p in list_versions(out)}
    for name in names:
        if name not in complete and name.endswith(fingerprint[:12]):
            return name
    numbers = [int(VERSION_RE.match(n).group(1)) for n in names]  # type: ignore[union-attr]
    return version_name(1 + max(numbers, default=0), fingerprint)


def publish_tables(build: Path, version_loc: str) -> None:
    """Upload the tables and dataset.json (last: it is what makes the version listed)."""
    for name in TABLE_FILES:
        upload(build / name, join(version_loc, name))


def host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def build_dir_prefix() -> str:
    return f"{BUILD_PREFIX}{host()}-{os.getpid()}-"


def sweep_stale_builds(out: Path) -> list[Path]:
    """Remove temp build dirs of killed shard runs: only those this host's dead processes left behind.

    A build dir is named ``.tmp-build-<host>-<pid>-<random>``; one from another host (a shared filesystem) or from a
    live process (a concurrent shard run) is kept, and so is any name this code did not write."""
    removed = []
    for d in out.glob(f"{BUILD_PREFIX}*"):
        parts = d.name[len(BUILD_PREFIX) :].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host() or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        shutil.rmtree(d, ignore_errors=True)
        log.info("removed %s, left by a shard run that no longer exists", d.name)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
