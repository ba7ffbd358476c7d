"""1x1 convolutions as one matrix product over the pixels of a channels-last map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseConv(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, 1)`` with the same parameters, computed as ``F.linear``.

    On the CPU, PyTorch sends a 1x1 convolution with a small batch on one thread to its slow
    im2col path, which also copies channels-last inputs to NCHW; a linear map over the
    (b, h, w, c) view of a channels-last tensor is a single GEMM, forward and backward, on
    any thread count. The result is channels-last.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return y.permute(0, 3, 1, 2)
