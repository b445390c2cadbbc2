"""The one rule for picking a torch device, shared by evaluation and GPU-side image decoding."""

from __future__ import annotations

import torch


def resolve_device(requested: str | None = "auto", fallback: str = "cpu", hint: str = "") -> torch.device:
    """``"auto"``/None -> CUDA when available, else the CPU; any other name is taken as given.

    A CUDA device on a host without CUDA: ``fallback="cpu"`` runs on the CPU instead (slower, same result);
    ``"error"`` raises here, with ``hint``, rather than failing later inside a model or decoder call.
    """
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        if fallback == "cpu":
            return torch.device("cpu")
        raise RuntimeError(
            f"device {requested!r} needs CUDA, but torch.cuda.is_available() is False" + (f"; {hint}" if hint else "")
        )
    return torch.device(requested)
