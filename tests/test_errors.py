"""The retry rule: permanent failures by type, and through Ray Train's wrapping of a worker's exception."""

from __future__ import annotations

from senet_dist.data import DatasetError, ShardReadError
from senet_dist.errors import ConfigError, ResourceError, TrainingError, caused_by_permanent, is_retryable


def test_permanent_errors_are_not_retried() -> None:
    for exc in (
        ConfigError("x"),
        ResourceError("x"),
        DatasetError("x"),
        ShardReadError("x"),
        TrainingError("x", retryable=False),
    ):
        assert not is_retryable(exc), exc
    for exc in (TrainingError("lost a node", retryable=True), OSError("connection reset"), RuntimeError("?")):
        assert is_retryable(exc), exc


def test_a_permanent_cause_is_found_inside_ray_trains_wrapping() -> None:
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    wrapped = UserExceptionWithTraceback(ShardReadError("shard-000001.tar is truncated"), "Traceback ...")
    assert caused_by_permanent(wrapped)
    try:
        try:
            raise ConfigError("bad")
        except ConfigError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert caused_by_permanent(outer)
    assert not caused_by_permanent(UserExceptionWithTraceback(OSError("reset"), ""))
