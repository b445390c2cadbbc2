"""One shard location (a plain path or any pyarrow.fs URI) as a sequential byte stream, for the tar parser.

Local files are opened as they always were (the OS reads ahead). Remote objects are read by a background thread in
large ranged reads into a bounded in-memory queue, so (a) the next shard's first bytes arrive while the current one is
being decoded (:func:`read_ahead`), and (b) a transient error (a dropped connection, a timeout, a 5xx/SlowDown) is
retried from the byte offset already fetched, with exponential backoff, instead of failing the whole training run.
The AWS SDK under pyarrow already retries one request a few times (~2 s for a refused connection, measured); an
endpoint restart or a load balancer blip lasts longer, which is what :class:`RetryPolicy` covers. Nothing is written
to local disk.

WebDataset's ``gopen`` has no ``s3://`` handler; one pyarrow path covers local disks and every object store.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

import pyarrow as pa

from senet_dist.errors import SenetError, one_line
from senet_dist.storage import cached_filesystem, is_local, redact

log = logging.getLogger(__name__)

LOCAL_BUFFER_BYTES = 1 << 20  # tar headers are 512 bytes: a large buffer keeps a local read one syscall per MiB
CHUNK_BYTES = 8 << 20  # one ranged GET: large enough that request latency is small next to transfer time
READ_AHEAD_BYTES = 32 << 20  # fetched, not yet parsed, per shard in flight (current + next: <= 64 MiB a stream)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one remote read keeps trying through transient errors before giving up.

    The defaults ride out at least 15 s of outage (0.5 + 1 + 2 + 4 + 8 s of backoff, plus the SDK's own retries in
    every try); anything longer fails with :class:`ShardUnavailableError`, which the flow retries (resuming from the
    last checkpoint).
    """

    attempts: int = 6  # tries of one read, the first included; the count restarts after every successful read
    base_delay: float = 0.5  # seconds before the second try; doubles after each failure
    max_delay: float = 8.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure."""
        return min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))


class ShardUnavailableError(SenetError, RuntimeError):
    """A remote shard stayed unreachable through the whole retry budget.

    Not a ``PermanentError``: storage usually comes back, so the flow (and Ray Train) may retry and resume.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message  # kept apart from ``args``, which WebDataset's tar iterator appends to


# pyarrow's S3 client raises OSError("... AWS Error <CODE> during <Op> operation: ...") and, for a response without a
# body (HEAD), "AWS Error UNKNOWN (HTTP status <n>) ...". 404 already arrives as FileNotFoundError.
_HTTP_STATUS = re.compile(r"http status (?:code )?(\d{3})")
_RETRYABLE_STATUS = (408, 429)  # request timeout, too many requests; and every 5xx
_PERMANENT = (  # S3 error codes as pyarrow spells them (lower-cased): credentials, permissions, names
    *("access_denied", "invalid_access_key_id", "signature_does_not_match", "no_such_bucket", "no_such_key"),
    *("invalid_bucket_name", "invalid_object_state"),
)


def is_transient(exc: BaseException) -> bool:
    """True when a later try may succeed: network failures (refused, reset, timeouts), 5xx, SlowDown, throttling.

    Not found and access denied are permanent. An OSError this does not recognise counts as transient: the retry
    budget bounds what that costs, while failing a run for good on a passing error cannot be undone.
    """
    if not isinstance(exc, OSError):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    text = str(exc).lower()
    status = _HTTP_STATUS.search(text)
    if status is not None:
        code = int(status.group(1))
        return code >= 500 or code in _RETRYABLE_STATUS
    return not any(p in text for p in _PERMANENT)


_EOF = object()


class RemoteShard:
    """A remote shard's bytes, fetched from the moment it is created by a daemon thread, consumed with ``read``.

    At most ``buffer_bytes`` are held; errors reach the reader in order, after the bytes fetched before them.
    """

    def __init__(
        self,
        location: str,
        retry: RetryPolicy | None = None,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        buffer_bytes: int = READ_AHEAD_BYTES,
    ) -> None:
        self.uri = redact(location)
        self.retry, self.chunk_bytes = retry or RetryPolicy(), chunk_bytes
        self.fetched = 0  # bytes received so far (the offset a retry resumes from)
        self.size = -1  # the object's size, known once it is opened
        self._location = location
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, buffer_bytes // chunk_bytes))
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._finished = False
        threading.Thread(target=self._fetch, name=f"read-ahead {self.uri}", daemon=True).start()

    def __repr__(self) -> str:  # WebDataset's tar iterator puts str(fileobj) into error messages
        return self.uri

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); fewer only at the end of the object."""
        parts: list[bytes] = []
        want = size if size >= 0 else None
        got = 0
        while want is None or got < want:
            if not self._pending and not self._next_chunk():
                break
            take = len(self._pending) if want is None else min(len(self._pending), want - got)
            parts.append(bytes(self._pending[:take]))
            self._pending = self._pending[take:]
            got += take
        return b"".join(parts)

    def _next_chunk(self) -> bool:
        if self._finished:
            return False
        item = self._queue.get()
        if item is _EOF:
            self._finished = True
            return False
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        self._pending = memoryview(item)  # type: ignore[arg-type]  # a pyarrow Buffer
        return True

    def close(self) -> None:
        """Stop fetching (the thread exits at its next chunk or backoff) and drop what is buffered."""
        self._stop.set()
        self._finished, self._pending = True, memoryview(b"")
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> RemoteShard:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(self) -> None:
        try:
            for chunk in self._chunks():
                if not self._put(chunk):
                    return
            self._put(_EOF)
        except BaseException as exc:  # noqa: BLE001  # handed to the reader, raised there
            self._put(exc)

    def _chunks(self) -> Iterator[pa.Buffer]:
        failures, since = 0, 0.0
        f: pa.NativeFile | None = None
        while not self._stop.is_set():
            tried_at = time.monotonic()
            try:
                if f is None:
                    fs, path = cached_filesystem(self._location)
                    f = fs.open_input_file(path)
                    self.size = f.size()
                    f.seek(self.fetched)  # a retry resumes where the bytes already handed on end
                if self.fetched >= self.size:
                    _close_quietly(f)
                    return
                buf = f.read_buffer(min(self.chunk_bytes, self.size - self.fetched))
                if not buf.size:  # a dropped connection can look like a short body
                    raise ConnectionResetError(f"the object ended after {self.fetched} of {self.size} bytes")
            except OSError as exc:
                _close_quietly(f)
                f = None
                if not is_transient(exc):
                    raise
                since = since if failures else tried_at
                failures += 1
                if failures >= self.retry.attempts:
                    raise ShardUnavailableError(
                        f"shard {self.uri} unavailable: {failures} attempts over {time.monotonic() - since:.1f} s "
                        f"failed; last error: {one_line(exc)}"
                    ) from exc
                wait = self.retry.delay(failures)
                log.warning("reading %s failed (%s); retry %d in %.1f s", self.uri, one_line(exc), failures, wait)
                self._stop.wait(wait)
                continue
            failures = 0
            self.fetched += buf.size
            yield buf


def _close_quietly(f: pa.NativeFile | None) -> None:
    """Close a file whose connection may be gone."""
    if f is not None:
        try:
            f.close()
        except OSError:
            pass


def open_shard(location: str, retry: RetryPolicy | None = None) -> BinaryIO | RemoteShard:
    """A readable stream over one shard: a buffered local file, or a :class:`RemoteShard` (fetching from now on)."""
    if is_local(location):
        return open(location.removeprefix("file://"), "rb", buffering=LOCAL_BUFFER_BYTES)
    return RemoteShard(location, retry)


def read_ahead(
    shards: Iterable[tuple[str, int]], retry: RetryPolicy | None = None
) -> Iterator[tuple[str, int, RemoteShard | None]]:
    """``(location, expected samples, stream)`` in order; while one is consumed the next remote one is fetched.

    ``stream`` is None for local files (open them with :func:`open_shard`; the OS reads ahead). Each stream is closed
    when the consumer asks for the next one, or when this generator is closed.
    """
    items = iter(shards)

    def start() -> tuple[str, int, RemoteShard | None] | None:
        item = next(items, None)
        if item is None:
            return None
        location, n = item
        return location, n, (None if is_local(location) else RemoteShard(location, retry))

    following = start()
    try:
        while following is not None:
            current = following
            following = start()  # the next shard starts fetching now
            try:
                yield current
            finally:
                _close(current)
    finally:
        _close(following)  # closed early: drop what was fetched ahead


def _close(item: tuple[str, int, RemoteShard | None] | None) -> None:
    if item is not None and item[2] is not None:
        item[2].close()
