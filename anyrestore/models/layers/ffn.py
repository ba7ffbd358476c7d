"""Gated depthwise feed-forward network (Restormer's GDFN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.bands import in_bands
from anyrestore.models.layers.pointwise import PointwiseConv


class GatedDconvFFN(nn.Module):
    """1x1 expand to two branches, 3x3 depthwise, GELU(one) * other, 1x1 project back."""

    def __init__(self, dim: int, expansion: float = 2.0, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = PointwiseConv(dim, hidden * 2, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = PointwiseConv(hidden, dim, bias=bias)

    def _body(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b, add=residual)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The FFN of ``x``, plus ``residual`` (added inside the last GEMM) when given.

        Without gradients, large maps go through in bands of rows (``in_bands``; the 3x3
        depthwise conv needs one row of context): the hidden layer is 2 x expansion times as
        wide as the input.
        """
        return in_bands(self._body, (x, residual), halo=1)
