"""The export's errors, in a module of their own: every export step (source, writers, verification) raises them,
and :mod:`~senet_dist.release.export`, which imports those steps, re-exports them for its callers."""

from __future__ import annotations


class ExportError(ValueError):
    """The export cannot be made: an unknown source, no data to verify with, an occupied target, a missing extra."""


class VerificationError(RuntimeError):
    """The exported model disagrees with the PyTorch model; nothing was written."""
