"""Wavelet-based transformer block (WTB), after Wave-ViT (Yao et al., ECCV 2022).

Queries are every pixel; keys and values come from a wavelet-downsampled copy of the
features (DWT, 3x3 mixing of the four sub-bands, then a strided conv), so attention costs
``hw x n_kv`` instead of ``(hw)^2`` while the DWT keeps what plain striding would alias. The
mixed sub-bands are also inverted back to full resolution and concatenated to the attention
output, giving the block a local, lossless path next to the global one.

The keys and values span the whole image, so they go through a ``GlobalStat``: tiled
inference attends every tile's queries to the key/value tokens recorded on the whole image
(docs/architectures.md, "Image-wide values").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.ffn import GatedDconvFFN
from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.norm import LayerNorm2d
from anyrestore.models.layers.wavelets import DWT, IDWT

# Queries are processed in chunks so the (queries x keys) score matrix stays small on big images.
_QUERY_CHUNK = 4096


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (b, heads, n, d) tensors, in query chunks.

    Plain matmuls rather than ``scaled_dot_product_attention``: the flop counter does not see
    the CPU fused kernel, and complexity figures must include attention.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    kt = k.transpose(-2, -1)
    outs = []
    for start in range(0, q.shape[-2], _QUERY_CHUNK):
        scores = (q[..., start : start + _QUERY_CHUNK, :] @ kt) * scale
        outs.append(scores.softmax(dim=-1) @ v)
    return torch.cat(outs, dim=-2) if len(outs) > 1 else outs[0]


class WaveletAttention(nn.Module):
    """Multi-head attention of every pixel over DWT-downsampled keys and values."""

    def __init__(self, dim: int, heads: int, kv_stride: int, wavelet: str = "haar") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        reduced = max(dim // 4, 1)
        self.q = nn.Conv2d(dim, dim, 1)
        self.reduce = nn.Sequential(nn.Conv2d(dim, reduced, 1), nn.GELU())
        self.dwt = DWT(wavelet)
        self.idwt = IDWT(wavelet)
        self.filter = nn.Sequential(nn.Conv2d(4 * reduced, 4 * reduced, 3, padding=1), nn.GELU())
        self.kv_embed = nn.Conv2d(4 * reduced, dim, kv_stride, stride=kv_stride)
        self.kv_norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Conv2d(dim + reduced, dim, 1)
        self.kv_stat = GlobalStat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        q = self.q(x).reshape(b, heads, d, h * w).transpose(-2, -1)
        bands = self.filter(self.dwt(self.reduce(x)))
        local = self.idwt(bands)  # (b, reduced, h, w)
        k, v = self.kv_stat(lambda: self.keys_values(bands), b)
        out = chunked_attention(q, k, v).transpose(-2, -1).reshape(b, c, h, w)
        return self.proj(torch.cat([out, local], dim=1))

    def keys_values(self, bands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values, (b, heads, n_kv, d) each, from the mixed sub-bands."""
        b, heads = bands.shape[0], self.heads
        stride = self.kv_embed.stride[0]
        ph, pw = -bands.shape[-2] % stride, -bands.shape[-1] % stride
        if ph or pw:  # a partial last patch still feeds a key instead of being dropped
            bands = F.pad(bands, (0, pw, 0, ph), mode="replicate")
        tokens = self.kv_embed(bands).flatten(2).transpose(1, 2)  # (b, n_kv, c)
        k, v = self.kv(self.kv_norm(tokens)).chunk(2, dim=-1)
        k = k.reshape(b, -1, heads, k.shape[-1] // heads).transpose(1, 2)
        v = v.reshape(b, -1, heads, v.shape[-1] // heads).transpose(1, 2)
        return k, v


class WaveletTransformerBlock(nn.Module):
    """Pre-norm residual block: wavelet attention, then a gated depthwise FFN."""

    def __init__(
        self, dim: int, heads: int, kv_stride: int, ffn_expansion: float, wavelet: str = "haar"
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = WaveletAttention(dim, heads, kv_stride, wavelet)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GatedDconvFFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))
