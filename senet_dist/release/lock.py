"""One writer at a time per dataset in the model registry::

    with registry_lock(store, dataset) as lock:
        ...  # re-read the table, decide
        lock.fence()  # still ours? (else RegistryLockLost, and nothing is written)
        store.append(...)

Why a lock at all, when readers already resolve two champions deterministically (registry.states)? Readers are
safe without it; *decisions* are not: two gates that both read "champion C" could each promote their own model,
and the slower one would win even if it is worse. Under the lock a gate re-reads the champion, decides, and
appends its events as one Parquet part before the next gate reads.

- Local roots: ``fcntl.flock`` on ``<root>/_locks/models-<dataset>.lock``. The kernel releases the lock when the
  holder exits, even on ``kill -9``, so a crashed promotion never leaves a stale lock to clean up (a file created
  with ``O_CREAT|O_EXCL`` would). Works across processes on one host and on shared filesystems with POSIX locks.
  It cannot be lost while its holder lives, so ``fence()`` is a no-op.
- S3 roots: a lease object (:class:`_S3Lease`) created with a conditional put (``If-None-Match: *``, which S3, MinIO
  and moto honour), so exactly one writer creates it; renewed by a heartbeat thread every ``lease_s / 3`` with
  ``If-Match: <our etag>``; taken over once expired (its holder crashed) with ``If-Match: <the expired etag>``, so
  two waiters cannot both take it; released with ``If-Match`` of our own. ``fence()`` is one more conditional
  renewal: it fails, with :class:`RegistryLockLost`, exactly when someone else wrote the lease since our last put.
  This needs boto3, a runtime dependency for that reason: pyarrow's S3 filesystem (26.x) has no conditional writes.
- Other filesystems: no lock; a warning says so. Readers still always see exactly one champion.

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
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow.fs as pafs

from senet_dist.errors import PermanentError, SenetError
from senet_dist.storage import s3_options_from_env

if TYPE_CHECKING:
    from senet_dist.artifacts import ArtifactStore

log = logging.getLogger(__name__)

LOCK_DIR = "_locks"  # next to the tables; the `_` prefix keeps it out of every table read
# A crashed holder blocks the dataset's writers for at most this long; a live one renews every third of it, so a
# holder must stall (a suspended VM, an S3 outage) for two thirds of a lease before it can lose it.
DEFAULT_LEASE_S = 60.0
# Ten lease lifetimes: a crashed holder's lease has long expired by then, so a waiter only times out behind a holder
# that is alive and still renewing, i.e. stuck in a critical section that normally takes seconds (the message says who).
DEFAULT_TIMEOUT_S = 600.0


class RegistryLockTimeout(SenetError, TimeoutError):
    """Another process held the dataset's registry lock for longer than the timeout."""


class RegistryLockLost(PermanentError):
    """Another writer took the lease over while this process held it (it stalled for longer than a lease): nothing
    was written. Permanent, so the flow does not retry it silently: a lease lost once is lost again by a process
    that stalls the same way; the registry is unchanged and the next gate (or a person) decides."""


def lock_name(dataset: str) -> str:
    """A filesystem-safe, collision-free object name for ``dataset`` (any unicode, spaces, slashes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-.")[:60] or "dataset"
    return f"models-{slug}-{hashlib.sha256(dataset.encode()).hexdigest()[:10]}.lock"


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": time.time()}


class HeldLock:
    """What ``with registry_lock(...) as lock`` yields: call ``lock.fence()`` right before each write made under it."""

    def fence(self) -> None:
        """No-op: a kernel lock cannot be lost while its holder lives (and there is nothing to fence without a lock)."""


@contextlib.contextmanager
def registry_lock(
    store: ArtifactStore, dataset: str, *, timeout: float = DEFAULT_TIMEOUT_S, lease_s: float = DEFAULT_LEASE_S
) -> Iterator[HeldLock]:
    """Hold the registry lock of ``dataset`` under ``store``'s root for the ``with`` block (module doc)."""
    if isinstance(store.fs, pafs.LocalFileSystem):
        with _flock(os.path.join(store.base, LOCK_DIR, lock_name(dataset)), timeout):
            yield HeldLock()
    elif isinstance(store.fs, pafs.S3FileSystem):
        lease = _S3Lease.for_store(store, lock_name(dataset), lease_s)
        lease.acquire(timeout)
        try:
            yield lease
        finally:
            lease.release()
    else:
        log.warning("registry %s: no lock for this filesystem; concurrent promotions are not serialised", store.root)
        yield HeldLock()


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


def s3_client_kwargs(root: str) -> dict[str, Any]:
    """``boto3.client("s3", **kwargs)`` settings that reach the same endpoint as the store at ``root`` does.

    Why not just the environment: :func:`senet_dist.storage.resolve_filesystem` lets a URI's query string
    (``s3://bucket/prefix?endpoint_override=host:port&scheme=http&region=...``) and its ``user:secret@`` override the
    ``AWS_*`` environment, and a lock on another endpoint than the tables it guards serialises nothing. Keys and
    regions missing from both are left to boto3's own chain (profiles, instance roles), as pyarrow's SDK does."""
    opts = s3_options_from_env()
    parts = urlsplit(root)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if "endpoint_override" in query:  # pyarrow's default scheme for it is https, whatever the environment's is
        opts |= {"endpoint_override": query["endpoint_override"], "scheme": query.get("scheme", "https")}
        opts.setdefault("region", "us-east-1")
    elif "scheme" in query:
        opts["scheme"] = query["scheme"]
    if "region" in query:
        opts["region"] = query["region"]
    if parts.username and parts.password:
        opts |= {"access_key": unquote(parts.username), "secret_key": unquote(parts.password)}
        opts.pop("session_token", None)
    kwargs: dict[str, Any] = {"region_name": opts.get("region")}
    if "endpoint_override" in opts:
        kwargs["endpoint_url"] = f"{opts.get('scheme', 'https')}://{opts['endpoint_override']}"
    if "access_key" in opts:
        kwargs |= {"aws_access_key_id": opts["access_key"], "aws_secret_access_key": opts["secret_key"]}
        kwargs["aws_session_token"] = opts.get("session_token")
    return kwargs


def _s3_client(root: str, lease_s: float) -> Any:
    """A boto3 S3 client for the lease; requests time out well within a lease, so a hung one cannot outlive it."""
    import boto3  # a runtime dependency (pyproject.toml): without it an S3 registry would have no lock at all
    from botocore.config import Config

    kwargs = s3_client_kwargs(root)
    config = Config(
        connect_timeout=min(10.0, max(1.0, lease_s / 6)),
        read_timeout=min(20.0, max(1.0, lease_s / 3)),
        retries={"max_attempts": 3, "mode": "standard"},
        # pyarrow addresses buckets by path on a custom endpoint (MinIO, moto); boto3 would try bucket.host names
        s3={"addressing_style": "path"} if "endpoint_url" in kwargs else None,
    )
    return boto3.client("s3", config=config, **kwargs)


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _conflict(exc: BaseException) -> bool:
    """Someone else's write won the condition (409: S3's answer to two conditional writes at the same moment)."""
    return _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def _missing(exc: BaseException) -> bool:
    return _error_code(exc) in ("NoSuchKey", "404", "NotFound")


class _S3Lease(HeldLock):
    """A lease object in the bucket: conditional create, renewal, expiry, conditional takeover and delete.

    The body names the holder (host, pid, a token unique to this lease) and when it expires. Every put carries a
    condition, so the ETag this process last wrote proves nobody else wrote since; a put whose reply was lost (and
    that botocore retried into a 412) is recognised by its token and adopted, not mistaken for a takeover."""

    # Test hook, None in production: called between reading an expired lease and the conditional put that takes it
    # over, so a test can delete or replace the object exactly there (tests/security/test_champion_lock.py).
    before_takeover: ClassVar[Callable[[_S3Lease], None] | None] = None

    def __init__(self, client: Any, bucket: str, key: str, lease_s: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.client, self.bucket, self.key, self.lease_s = client, bucket, key, lease_s
        self.holder = _holder()  # one token for the lease's whole life: its renewals are recognisably ours
        self.token: str = self.holder["token"]
        self.etag: str | None = None
        self.lost: str | None = None  # why, once another writer took the lease over
        self._client_error: type[Exception] = ClientError
        self._storage_errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
        self._mu = threading.Lock()  # one conditional put at a time: the heartbeat's and fence()'s
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @classmethod
    def for_store(cls, store: ArtifactStore, name: str, lease_s: float) -> _S3Lease:
        """The lease ``name`` under ``_locks/`` next to ``store``'s tables, through ``store``'s endpoint."""
        bucket, _, prefix = store.base.partition("/")
        key = "/".join(p for p in (prefix.strip("/"), LOCK_DIR, name) if p)
        return cls(_s3_client(store.root, lease_s), bucket, key, lease_s)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    # ---- one request each ----------------------------------------------------------------------------------
    def _put(self, **condition: str) -> str:
        body = self.holder | {"expires": time.time() + self.lease_s, "lease_s": self.lease_s}
        reply = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode(), **condition)
        return str(reply["ETag"])

    def _read(self) -> tuple[str, dict[str, Any]] | None:
        """(etag, body) of the lease object, None when there is none. A torn or foreign body reads as expired."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self._client_error as exc:
            if _missing(exc):
                return None
            raise
        try:
            body = json.loads(got["Body"].read())
        except ValueError:
            body = None
        return str(got["ETag"]), body if isinstance(body, dict) else {}

    # ---- acquire -------------------------------------------------------------------------------------------
    def acquire(self, timeout: float) -> None:
        """Create or take over the lease, waiting up to ``timeout`` s; then renew it in the background."""
        deadline, delay = time.monotonic() + timeout, 0.05
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise RegistryLockTimeout(f"registry lock {self.uri} still held after {timeout:g}s (holder: {holder})")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)  # polls settle at one conditional put and one get a second
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-{self.key}", daemon=True)
        self._beat.start()

    def _try_acquire(self) -> str | None:
        """None when this process now holds the lease; else who holds it, for the timeout message."""
        try:
            self.etag = self._put(IfNoneMatch="*")
            return None
        except self._client_error as exc:
            if not _conflict(exc):
                raise
        current = self._read()
        if current is None:
            return "released just now"  # the next conditional create decides
        etag, body = current
        if body.get("token") == self.token:  # our create landed; botocore retried it into a 412
            self.etag = etag
            return None
        expired_for = time.time() - _float(body.get("expires"))  # a body without one: expired (torn, foreign)
        if expired_for < 0:
            return _describe(body)
        if _S3Lease.before_takeover is not None:
            _S3Lease.before_takeover(self)
        try:  # expired: take it over, but only if nobody replaced (or released) it since we read it
            self.etag = self._put(IfMatch=etag)
        except self._client_error as exc:
            if _conflict(exc):
                return f"{_describe(body)}, taken over by another waiter"
            if _missing(exc):
                return "released during takeover"  # the next conditional create decides
            raise
        log.warning("took over the registry lease %s of %s, expired %.1fs ago", self.uri, _describe(body), expired_for)
        return None

    # ---- while held ----------------------------------------------------------------------------------------
    def fence(self) -> None:
        """Prove the lease is still ours right before a write (a conditional renewal), else raise
        :class:`RegistryLockLost`. A storage error is raised as it is: not proven, so not written either."""
        self._renew()

    def _renew(self) -> None:
        with self._mu:
            if self.lost is not None:
                raise RegistryLockLost(self.lost)
            for _ in range(2):
                try:
                    self.etag = self._put(IfMatch=str(self.etag))
                    return
                except self._client_error as exc:
                    if not (_conflict(exc) or _missing(exc)):
                        raise
                current = self._read()
                if current is None or current[1].get("token") != self.token:
                    who = "released" if current is None else f"taken over by {_describe(current[1])}"
                    self.lost = f"registry lease {self.uri} was {who} while this process held it; nothing written"
                    raise RegistryLockLost(self.lost)
                self.etag = current[0]  # our last renewal landed but its reply did not: adopt it, renew again
            self.lost = f"registry lease {self.uri}: renewal keeps failing its condition; nothing written"
            raise RegistryLockLost(self.lost)

    def _heartbeat(self) -> None:
        """Renew every third of a lease until released, so a long critical section never loses the lease."""
        while not self._stop.wait(self.lease_s / 3):
            try:
                self._renew()
            except RegistryLockLost as exc:
                log.warning("%s", exc)
                return
            except self._storage_errors as exc:  # a storage hiccup: the lease still holds for a while; try again
                log.warning("renewing registry lease %s failed, retrying: %s", self.uri, " ".join(str(exc).split()))

    def stop_heartbeat(self) -> None:
        """Stop renewing (release does; tests do it to play a holder that stalled)."""
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Never raises: the writes are done, and a lease
        that could not be deleted expires by itself within ``lease_s``."""
        self.stop_heartbeat()
        with self._mu:
            if self.lost is not None:
                return
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=str(self.etag))
            except self._storage_errors as exc:
                if _conflict(exc) or _missing(exc):
                    log.warning("registry lease %s was taken over before release", self.uri)
                else:
                    log.warning("could not release registry lease %s (it expires by itself): %s", self.uri, exc)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _describe(body: dict[str, Any]) -> str:
    """The holder in a message: ``host pid N`` (what a person looks for; the token is only for the lease itself)."""
    if not body:
        return "an unreadable lease"
    return f"{body.get('host', '?')} pid {body.get('pid', '?')}"
