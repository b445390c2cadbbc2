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


def test_one_line_gives_a_dataloader_workers_original_message():
    from senet_dist.errors import one_line

    wrapped = ShardReadError(  # how PyTorch re-raises a loader worker's error in the training process
        "Caught ShardReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise ShardReadError(msg)\n'
        "senet_dist.data.stream.ShardReadError: shard s3://b/v/train-000001.tar holds 3 samples, 8 expected\n"
    )
    assert one_line(wrapped) == "ShardReadError: shard s3://b/v/train-000001.tar holds 3 samples, 8 expected"
    assert one_line(ValueError("a\n  b")) == "ValueError: a b"
