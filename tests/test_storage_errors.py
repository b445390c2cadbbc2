"""Classifying pyarrow's storage OSErrors (texts as real moto / curl responses give them) and redacting locations."""

from __future__ import annotations

import pickle

import pytest

from senet_dist.errors import PermanentError
from senet_dist.storage_errors import StorageError, classify_error, redact, storage_errors

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


def test_redact_drops_query_and_userinfo() -> None:
    assert redact(LOC) == "s3://bucket/shards"
    assert redact("https://user:pw@host:9000/p?x=1") == "https://host:9000/p"
    assert redact("/plain/path") == "/plain/path"


def test_redact_drops_query_and_user_info() -> None:
    assert redact("s3://b/v/x.tar?endpoint_override=h:9000&secret_key=S") == "s3://b/v/x.tar"
    assert redact("https://user:pw@host:8080/a/b.tar") == "https://host:8080/a/b.tar"
    assert redact("/data/shards/x.tar") == "/data/shards/x.tar"
