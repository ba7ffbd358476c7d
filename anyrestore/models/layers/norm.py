"""Channel-wise layer norm for (b, c, h, w) maps, as Restormer applies it per pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.tracing import in_graph_form


class LayerNorm2d(nn.Module):
    """Normalise over channels at each pixel, with a learned scale and (optional) shift.

    The channels are made the last axis (a free view of a channels-last map) so that one fused
    ``F.layer_norm`` kernel does the work; mean and variance over dim 1 of an NCHW tensor are
    strided reductions and were the slowest operators of AnyIR on the CPU. The result is
    returned channels-last, which is what the convolutions that follow run fastest on.
    """

    def __init__(self, channels: int, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_graph_form():
            return self._over_dim1(x)
        y = x.permute(0, 2, 3, 1)  # (b, h, w, c)
        if self.bias is None:
            # "BiasFree" variant: scale by the standard deviation without re-centring.
            var = y.float().var(dim=-1, keepdim=True, unbiased=False)
            y = (y * torch.rsqrt(var + self.eps).to(y.dtype)) * self.weight.to(y.dtype)
        elif y.dtype == torch.bfloat16 and y.device.type == "cpu":
            # PyTorch's CPU kernel for a bf16 input with fp32 scale and shift (what autocast
            # passes) is slower, forward and backward, than the fp32 kernel on an fp32 copy,
            # and less exact in its scale and shift gradients; both give the same output.
            with torch.autocast("cpu", enabled=False):
                # .float(): a model cast to bf16 whole (not autocast) has bf16 scale and shift.
                weight, bias = self.weight.float(), self.bias.float()
                y = F.layer_norm(y.float(), (y.shape[-1],), weight, bias, self.eps)
            y = y.to(torch.bfloat16)
        else:
            y = F.layer_norm(y, (y.shape[-1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def _over_dim1(self, x: torch.Tensor) -> torch.Tensor:
        """The same norm over dim 1, written out (a runtime fuses it in its own layout)."""
        if self.bias is None:
            var = x.var(dim=1, keepdim=True, unbiased=False)
            return x * torch.rsqrt(var + self.eps) * self.weight[:, None, None]
        centred = x - x.mean(dim=1, keepdim=True)
        var = centred.pow(2).mean(dim=1, keepdim=True)
        normed = centred / torch.sqrt(var + self.eps)
        return normed * self.weight[:, None, None] + self.bias[:, None, None]
