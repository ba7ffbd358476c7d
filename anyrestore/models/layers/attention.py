"""Multi-Dconv head transposed attention (Restormer, Zamir et al. 2022).

Attention is taken across channels rather than pixels, so its cost grows linearly with
image size: a (c/heads x c/heads) map per head instead of (hw x hw). That map sums over every
pixel, so it is an image-wide statistic and goes through ``GlobalStat`` for tiled inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.globalstats import GlobalStat


class TransposedAttention(nn.Module):
    """Q, K, V from a 1x1 then 3x3 depthwise conv; softmax over channel-channel scores."""

    def __init__(self, dim: int, heads: int, bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        # Learned per-head temperature replaces the fixed 1/sqrt(d) of Eq. (7).
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.proj = nn.Conv2d(dim, dim, 1, bias=bias)
        self.stats = GlobalStat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q = q.reshape(b, self.heads, c // self.heads, h * w)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)

        def channel_attention() -> torch.Tensor:
            qn = F.normalize(q, dim=-1)
            kn = F.normalize(k, dim=-1)
            attn = (qn @ kn.transpose(-2, -1)) * self.temperature  # (b, heads, c', c')
            return attn.softmax(dim=-1)

        out = self.stats(channel_attention, batch=b) @ v
        return self.proj(out.reshape(b, c, h, w))
