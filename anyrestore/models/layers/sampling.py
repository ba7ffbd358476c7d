"""Resolution changes by pixel (un)shuffle, as in Restormer and PromptIR."""

from __future__ import annotations

import torch
from torch import nn


class Downsample(nn.Module):
    """Halve height and width, double channels: 3x3 conv to c/2, then pixel-unshuffle by 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double height and width, halve channels: 3x3 conv to 2c, then pixel-shuffle by 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
