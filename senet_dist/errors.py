"""The errors senet-dist raises on purpose, split by what a retry would do.

A :class:`PermanentError` fails the same way every time (a bad value, a corrupt shard, a worker group the
cluster can never hold): retrying it only wastes a cluster start-up, so the flow does not. Anything else (a lost
worker or node, a storage hiccup) may pass on a second try. :func:`is_retryable` is the one rule for that.
"""

from __future__ import annotations

from collections.abc import Iterator


class SenetError(Exception):
    """Base of every error senet-dist raises deliberately."""


class PermanentError(SenetError):
    """Retrying cannot help: the input or the configuration must change first."""


class ConfigError(PermanentError, ValueError):
    """A bad configuration value, named by its dotted path; raised before any worker starts."""


class ResourceError(ConfigError):
    """The worker group needs more than the Ray cluster has, and the cluster cannot grow (or did not in time)."""


class TrainingError(SenetError, RuntimeError):
    """Training failed inside the Ray workers (after Ray Train's own retries).

    ``retryable`` is False when a worker failed on a :class:`PermanentError` (e.g. a corrupt shard), True when
    workers were lost (a killed process, a lost node). ``result`` holds what the run reached, when known.
    """

    def __init__(self, message: str, *, retryable: bool, result: object | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.result = result


def is_retryable(exc: BaseException) -> bool:
    """True when a second attempt may succeed (the flow's retry rule)."""
    if isinstance(exc, PermanentError):
        return False
    return bool(getattr(exc, "retryable", True))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its cause/context chain, through Ray Train's wrapping of a worker's exception
    (``UserExceptionWithTraceback`` keeps it as ``_base_exc``)."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        yield node
        seen.add(id(node))
        node = getattr(node, "_base_exc", None) or node.__cause__ or node.__context__


def caused_by_permanent(exc: BaseException) -> bool:
    """True when ``exc`` or anything in its cause/context chain is a :class:`PermanentError`."""
    return any(isinstance(node, PermanentError) for node in _chain(exc))


def senet_cause(exc: BaseException) -> SenetError | None:
    """The first of senet-dist's own errors in ``exc``'s cause/context chain (through Ray's wrapping), if any."""
    return next((node for node in _chain(exc) if isinstance(node, SenetError)), None)


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line. PyTorch re-raises a DataLoader worker's error with the worker's traceback in
    the message; the original message is its last line."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return f"{type(exc).__name__}: {' '.join(text.split())}"


__all__ = [
    "ConfigError",
    "PermanentError",
    "ResourceError",
    "SenetError",
    "TrainingError",
    "caused_by_permanent",
    "is_retryable",
    "one_line",
    "senet_cause",
]
