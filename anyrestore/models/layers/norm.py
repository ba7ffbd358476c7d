"""Channel-wise layer norm for (b, c, h, w) maps, as Restormer applies it per pixel."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """Normalise over channels at each pixel, with a learned scale and (optional) shift."""

    def __init__(self, channels: int, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        if self.bias is None:
            # "BiasFree" variant: scale without re-centring.
            y = x / torch.sqrt(var + self.eps)
            return y * self.weight[:, None, None]
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]
