"""Classifying pyarrow's storage OSErrors (texts as real moto / curl responses give them) and redacting locations."""

from __future__ import annotations

import pickle

import pytest

from senet_dist.errors import PermanentError
from senet_dist.storage import StorageError, classify_error, redact, storage_errors

LOC = "s3://bucket/shards?endpoint_override=10.0.0.1:9000&secret_key=hunter2"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (
            "When getting information for bucket 'b': AWS Error ACCESS_DENIED during HeadBucket operation",
            "access_denied",
        ),
        ("AWS Error INVALID_ACCESS_KEY_ID during ListObjectsV2 operation: The AWS Access Key Id ...", "access_denied"),
        ("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect", "unreachable"),
        ("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: The specified bucket does not exist", "no_bucket"),
    ],
)
def test_known_oserrors_become_one_typed_line(text: str, kind: str) -> None:
    err = classify_error(OSError(text), LOC)
    assert isinstance(err, StorageError) and err.kind == kind
    assert isinstance(err, PermanentError) == (kind != "unreachable")  # an endpoint may come back: retried
    assert pickle.loads(pickle.dumps(err)).kind == kind and str(pickle.loads(pickle.dumps(err))) == str(err)
    assert str(err).endswith(": s3://bucket/shards") and "hunter2" not in str(err) and "\n" not in str(err)


def test_other_errors_pass_through_unchanged() -> None:
    assert classify_error(FileNotFoundError("no such key"), LOC) is None
    assert classify_error(OSError("disk full"), LOC) is None
    with pytest.raises(FileNotFoundError), storage_errors(LOC):
        raise FileNotFoundError("no such key")
    with pytest.raises(StorageError, match="access denied") as info, storage_errors(LOC):
        raise OSError("AWS Error ACCESS_DENIED during HeadObject operation: No response body.")
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no SDK noise chained on


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("s3://bucket/shards?endpoint_override=h:9000&secret_key=S", "s3://bucket/shards"),
        ("https://user:pw@host:9000/p?x=1", "https://host:9000/p"),
        ("s3://AKIAKEY:wJalrSECRET@bucket/photos", "s3://bucket/photos"),  # keys in the userinfo
        ("https://u:p@ss:w@rd@host/a", "https://host/a"),  # a password holding '@' and ':'
        ("https://host:99999999/p?X-Amz-Signature=abc", "https://host:99999999/p"),  # a port urlsplit rejects
        ("s3://bucket:notaport/x?token=t", "s3://bucket:notaport/x"),
        ("http://[::1/x?k=v", "http://[::1/x"),  # a bracket urlsplit rejects
        ("s3://b/p#secret=1", "s3://b/p"),
        ("/plain/path?not-a-query", "/plain/path?not-a-query"),  # a path is a path
    ],
)
def test_redact_never_shows_credentials_and_never_raises(location: str, shown: str) -> None:
    assert redact(location) == shown
