"""Gated depthwise feed-forward network (Restormer's GDFN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.pointwise import PointwiseConv

#: Without gradients, maps larger than this many pixels go through in bands of rows: the
#: hidden layer is 2 x expansion times as wide as the input and was the largest allocation
#: of a whole-image pass (a 1024x768 anyir_t pass peaked at 3.1 GB in fp32).
BAND_PIXELS = 1 << 16


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
        """The FFN of ``x``, plus ``residual`` (added inside the last GEMM) when given."""
        h, w = x.shape[-2:]
        rows = max(1, BAND_PIXELS // max(w, 1))
        if torch.is_grad_enabled() or h <= rows:
            return self._body(x, residual)
        # Pixel-local but for the 3x3 depthwise conv: each band of rows is computed with one
        # row of context above and below, which is then cut away; the image's own top and
        # bottom keep the conv's zero padding, so the result is the whole-map result.
        out: torch.Tensor | None = None
        for top in range(0, h, rows):
            bottom = min(h, top + rows)
            lo, hi = max(0, top - 1), min(h, bottom + 1)
            add = None if residual is None else residual[:, :, lo:hi]
            band = self._body(x[:, :, lo:hi], add)[:, :, top - lo : bottom - lo]
            if out is None:  # the dtype autocast gives, channels-last as the rest
                out = torch.empty(
                    x.shape, dtype=band.dtype, device=x.device, memory_format=torch.channels_last
                )
            out[:, :, top:bottom] = band
        assert out is not None
        return out
