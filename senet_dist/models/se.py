"""Squeeze-and-Excitation blocks shared by every variant.

The squeeze is a spatial mean with ``keepdim=True`` so the excitation can stay 4-D and run as two
1x1 convolutions: no ``view``/``Linear`` round trip, and the (N, C, 1, 1) gate broadcasts over any
memory format (channels_last included). The reweighting is an out-of-place multiply (or ``addcmul``)
so autograd keeps the block input it needs for the backward pass.
"""

from __future__ import annotations

import torch
from torch import nn


def se_hidden(channels: int, reduction: int, min_hidden: int = 1) -> int:
    """Bottleneck width ``channels // reduction`` (the paper's rule), never below ``min_hidden``."""
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
    return max(min_hidden, channels // reduction)


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with fc1/fc2 as 1x1 convs.

    A 1x1 conv with bias on a 1x1 map has exactly the parameters of a ``Linear`` with bias, so the
    counts match the Linear-based reference implementations.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True, out_mult: int = 1) -> None:
        super().__init__()
        hidden = se_hidden(channels, reduction)
        self.channels = channels
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels * out_mult, 1, bias=bias)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """Per-(sample, channel) excitation logits from the squeezed input, shape (N, C*out_mult, 1, 1)."""
        squeezed = x.mean((2, 3), keepdim=True)
        return self.fc2(self.act(self.fc1(squeezed)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1) sigmoid gate; constant over space by construction."""
        return self.excitation(x).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SqueezeExciteBias(SqueezeExcite):
    """SE whose excitation emits ``2C`` channels: a gate ``w`` and a bias ``b``; ``x * sigmoid(w) + b``.

    Unlike the reference (which applied the 1x1 convs to the un-pooled map, i.e. a per-pixel gate),
    both ``w`` and ``b`` come from the squeezed vector, so they are constant over space.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True) -> None:
        super().__init__(channels, reduction, bias=bias, out_mult=2)

    def gate_and_bias(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sigmoid(w), b)``, each (N, C, 1, 1)."""
        w, b = self.excitation(x).chunk(2, dim=1)
        return w.sigmoid(), b

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_and_bias(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, b = self.gate_and_bias(x)
        return torch.addcmul(b, x, g)
