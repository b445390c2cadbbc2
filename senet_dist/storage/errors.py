"""Typed, one-line errors for storage locations: pyarrow's ``OSError`` text (the AWS SDK's error names, curl's
messages) classified into :class:`StorageError` kinds, and locations redacted for messages.

Why classify text: pyarrow raises a bare ``OSError`` for a missing bucket, refused credentials and a dead endpoint
alike; the SDK's error name in its message is the only thing that tells them apart (read from real moto responses).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from senet_dist.errors import PermanentError, SenetError


class StorageError(SenetError, OSError):
    """A storage location that does not work, in one line: ``kind`` is ``no_bucket``, ``access_denied`` (both
    :class:`StorageConfigError`: permanent) or ``unreachable`` (:class:`StorageUnreachableError`: an endpoint that
    does not answer may be a typo or an outage, so the flow retries it once)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # a Ray worker's error travels pickled to the driver
        return type(self), (str(self), self.kind)


class StorageConfigError(StorageError, PermanentError):
    """A missing bucket or refused credentials: nothing changes until someone fixes the location or the keys."""


class StorageUnreachableError(StorageError):
    """The endpoint does not answer (a wrong AWS_ENDPOINT_URL, the network, an outage): retryable."""


# (kind, what the user reads, substrings of pyarrow's OSError text: the AWS SDK's error names and curl's)
_KINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("no_bucket", "bucket does not exist", ("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist")),
    (
        "access_denied",
        "access denied (check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
        (
            "ACCESS_DENIED",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "INVALID_ACCESS_KEY_ID",
            "SIGNATURE_DOES_NOT_MATCH",
            "HTTP status 403",
        ),
    ),
    (
        "unreachable",
        "storage endpoint unreachable (check AWS_ENDPOINT_URL and the network)",
        (
            "NETWORK_CONNECTION",
            "curlCode: 7",
            "Couldn't connect",
            "Could not connect",
            "curlCode: 6",
            "Couldn't resolve host",
            "curlCode: 28",
            "Timeout was reached",
        ),
    ),
)


def redact(location: str | os.PathLike[str]) -> str:
    """``location`` safe to write or log: a URI loses any ``user:password@`` and its query string and fragment (either
    may carry keys, e.g. ``?secret_key=...`` or a presigned token); a plain path is returned as is.

    The one redaction of the package: messages, tables, ``dataset.json``, reports and logs all show locations through
    it. It never raises, also not on a malformed URI (a bad port, stray brackets): the text is cut, never parsed
    strictly, so redaction cannot be the thing that fails on hostile input."""
    loc = str(location)
    scheme, sep, rest = loc.partition("://")
    if not sep:
        return loc
    for mark in ("?", "#"):
        rest = rest.split(mark, 1)[0]
    netloc, slash, path = rest.partition("/")
    host = netloc.rsplit("@", 1)[-1]  # user:password@host -> host (a password may itself hold '@' or ':')
    return f"{scheme}://{host}{slash}{path}"


def classify_error(exc: BaseException, location: str | os.PathLike[str]) -> StorageError | None:
    """A typed one-line :class:`StorageError` for pyarrow's ``OSError`` about ``location``, or None when the error
    is not one of the known permanent kinds (a missing key stays a ``FileNotFoundError``)."""
    if isinstance(exc, StorageError):
        return exc
    if not isinstance(exc, OSError) or isinstance(exc, FileNotFoundError):
        return None
    text = str(exc)
    for kind, what, needles in _KINDS:
        if any(n in text for n in needles):
            cls = StorageUnreachableError if kind == "unreachable" else StorageConfigError
            return cls(f"{what}: {redact(location)}", kind)
    return None


@contextmanager
def storage_errors(location: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise pyarrow's ``OSError`` for a bad location as one :class:`StorageError` line (no SDK noise, no
    secrets); other errors pass through unchanged."""
    try:
        yield
    except OSError as exc:
        err = classify_error(exc, location)
        if err is None or err is exc:
            raise
        raise err from None
