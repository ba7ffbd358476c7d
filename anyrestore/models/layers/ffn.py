"""Gated depthwise feed-forward network (Restormer's GDFN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.bands import in_bands
from anyrestore.models.layers.pointwise import PointwiseConv, pointwise


class GatedDconvFFN(nn.Module):
    """1x1 expand to two branches, 3x3 depthwise, GELU(one) * other, 1x1 project back.

    The two branches are computed as two maps (the rows of ``project_in`` and the channels of
    ``dwconv`` that belong to each) rather than one map split in two: a channel slice of a
    channels-last map is strided, and GELU and the product run much slower on it than on a
    dense map. Same parameters, same function.
    """

    def __init__(self, dim: int, expansion: float = 2.0, bias: bool = False) -> None:
        super().__init__()
        self.hidden = hidden = int(dim * expansion)
        self.project_in = PointwiseConv(dim, hidden * 2, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = PointwiseConv(hidden, dim, bias=bias)

    def _branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Branch ``index`` (0: the GELU branch, 1: the other) of project_in + dwconv."""
        rows = slice(index * self.hidden, (index + 1) * self.hidden)
        w_in, b_in = self.project_in.weight.flatten(1), self.project_in.bias
        w_dw, b_dw = self.dwconv.weight, self.dwconv.bias
        t = pointwise(x, w_in[rows], None if b_in is None else b_in[rows])
        b = None if b_dw is None else b_dw[rows]
        return F.conv2d(t, w_dw[rows], b, padding=1, groups=self.hidden)

    def _body(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        gate = F.gelu(self._branch(x, 0))
        value = self._branch(x, 1)
        # In place without autograd (GELU's backward needs its input, not this output)
        gated = gate.mul_(value) if not torch.is_grad_enabled() else gate * value
        return self.project_out(gated, add=residual)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The FFN of ``x``, plus ``residual`` (added inside the last GEMM) when given.

        Without gradients, large maps go through in bands of rows (``in_bands``; the 3x3
        depthwise conv needs one row of context): the hidden layer is 2 x expansion times as
        wide as the input.
        """
        return in_bands(self._body, (x, residual), halo=1)
