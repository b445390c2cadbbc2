"""One writer at a time per dataset in the model registry: ``with registry_lock(store, dataset): ...``.

Why a lock at all, when readers already resolve two champions deterministically (registry.states)? Readers are
safe without it; *decisions* are not: two gates that both read "champion C" could each promote their own model,
and the slower one would win even if it is worse. Under the lock a gate re-reads the champion, decides, and
appends its events as one Parquet part before the next gate reads.

- Local roots: ``fcntl.flock`` on ``<root>/_locks/models-<dataset>.lock``. The kernel releases the lock when the
  holder exits, even on ``kill -9``, so a crashed promotion never leaves a stale lock to clean up (a file created
  with ``O_CREAT|O_EXCL`` would). Works across processes on one host and on shared filesystems with POSIX locks.
- S3 roots: a lease object written with a conditional put (``If-None-Match: *``, which S3, MinIO and moto honour):
  exactly one writer creates it. An expired lease (its holder crashed) is taken over with ``If-Match: <etag>``, so
  two waiters cannot both take it. Needs ``boto3`` (pyarrow's S3 filesystem has no conditional writes).
- Other roots (and S3 without boto3): no lock; a warning says so. Readers still always see exactly one champion.

The critical sections are short (read the table, append one part); slow work (evaluation, export) happens outside.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from senet_dist.storage import s3_options_from_env

if TYPE_CHECKING:
    from senet_dist.artifacts import ArtifactStore

log = logging.getLogger(__name__)

LOCK_DIR = "_locks"  # next to the tables; the `_` prefix keeps it out of every table read


class RegistryLockTimeout(TimeoutError):
    """Another process held the dataset's registry lock for longer than the timeout."""


def lock_name(dataset: str) -> str:
    """A filesystem-safe, collision-free object name for ``dataset`` (any unicode, spaces, slashes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-.")[:60] or "dataset"
    return f"models-{slug}-{hashlib.sha256(dataset.encode()).hexdigest()[:10]}.lock"


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": time.time()}


@contextlib.contextmanager
def registry_lock(
    store: ArtifactStore, dataset: str, *, timeout: float = 120.0, lease_s: float = 300.0
) -> Iterator[None]:
    """Hold the registry lock of ``dataset`` under ``store``'s root for the ``with`` block."""
    if isinstance(store.fs, pafs.LocalFileSystem):
        with _flock(os.path.join(store.base, LOCK_DIR, lock_name(dataset)), timeout):
            yield
    elif isinstance(store.fs, pafs.S3FileSystem):
        lease = _S3Lease.create(store.base, lock_name(dataset), lease_s)
        if lease is None:
            yield
            return
        lease.acquire(timeout)
        try:
            yield
        finally:
            lease.release()
    else:
        log.warning("registry %s: no lock for this filesystem; concurrent promotions are not serialised", store.root)
        yield


@contextlib.contextmanager
def _flock(path: str, timeout: float) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    raise RegistryLockTimeout(
                        f"registry lock {path} still held after {timeout:g}s (holder: {holder or 'unknown'})"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)  # who holds it, for the timeout message of the next waiter
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        return ""


class _S3Lease:
    """A lease object in the bucket: conditional create, expiry, conditional takeover, conditional delete."""

    def __init__(self, client: Any, bucket: str, key: str, lease_s: float) -> None:
        self.client, self.bucket, self.key, self.lease_s = client, bucket, key, lease_s
        self.etag: str | None = None

    @classmethod
    def create(cls, base: str, name: str, lease_s: float) -> _S3Lease | None:
        try:
            import boto3
        except ImportError:
            log.warning("boto3 is not installed: S3 registry writes are not serialised (pip install boto3)")
            return None
        opts = s3_options_from_env()
        kwargs: dict[str, Any] = {"region_name": opts.get("region")}
        if "endpoint_override" in opts:
            kwargs["endpoint_url"] = f"{opts.get('scheme', 'https')}://{opts['endpoint_override']}"
        if "access_key" in opts:
            kwargs |= {"aws_access_key_id": opts["access_key"], "aws_secret_access_key": opts["secret_key"]}
            kwargs["aws_session_token"] = opts.get("session_token")
        bucket, _, prefix = base.partition("/")
        key = "/".join(p for p in (prefix.strip("/"), LOCK_DIR, name) if p)
        return cls(boto3.client("s3", **kwargs), bucket, key, lease_s)

    def _body(self) -> bytes:
        return json.dumps(_holder() | {"expires": time.time() + self.lease_s}).encode()

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    @classmethod
    def _precondition_failed(cls, exc: Exception) -> bool:
        return cls._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.etag = self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*"
                )["ETag"]
                return
            except Exception as exc:  # noqa: BLE001 - botocore's ClientError; anything else is re-raised
                if not self._precondition_failed(exc):
                    raise
            holder = self._take_over_if_expired()
            if holder is None:  # ours now
                return
            if time.monotonic() >= deadline:
                raise RegistryLockTimeout(
                    f"registry lock s3://{self.bucket}/{self.key} still held after {timeout:g}s (holder: {holder})"
                )
            time.sleep(0.1)

    def _take_over_if_expired(self) -> str | None:
        """None when this process now holds the lease; else the current holder's description."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # noqa: BLE001 - gone in between: the next conditional create decides
            if self._code(exc) in ("NoSuchKey", "404"):
                return "released just now"
            raise
        body = got["Body"].read().decode(errors="replace")
        try:
            expires = float(json.loads(body).get("expires", 0))
        except (ValueError, AttributeError):
            expires = 0.0
        if time.time() < expires:
            return body
        try:  # expired: take it over, but only if nobody replaced it since we read it
            self.etag = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=self._body(), IfMatch=got["ETag"]
            )["ETag"]
            log.warning("took over an expired registry lease s3://%s/%s (%s)", self.bucket, self.key, body)
            return None
        except Exception as exc:  # noqa: BLE001
            if self._precondition_failed(exc):
                return body
            raise

    def release(self) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as exc:  # noqa: BLE001 - taken over after our lease expired: not ours to delete
            if not self._precondition_failed(exc) and self._code(exc) not in ("NoSuchKey", "404"):
                raise
            log.warning("registry lease s3://%s/%s was taken over before release", self.bucket, self.key)
