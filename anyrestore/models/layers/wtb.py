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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

from anyrestore.models.layers.ffn import GatedDconvFFN
from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.norm import LayerNorm2d
from anyrestore.models.layers.pointwise import PatchConv
from anyrestore.models.layers.wavelets import DWT, IDWT

# The CPU's fused attention kernel is invisible to the flop counter unless told its cost, which
# is that of the two matmuls (complexity figures must include attention).
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _CPU_FLASH is not None and _CPU_FLASH not in flop_registry:

    @register_flop_formula(_CPU_FLASH)
    def _cpu_flash_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        return sdpa_flop_count(query, key, value)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (b, heads, n, d) tensors, fused and memory-bounded."""
    return F.scaled_dot_product_attention(q, k, v)


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
        self.kv_embed = PatchConv(4 * reduced, dim, kv_stride)
        self.kv_norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Conv2d(dim + reduced, dim, 1)
        self.kv_stat = GlobalStat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        q = self.q(x)
        # Heads as views: (b, heads, hw, d) without copying, whichever the memory layout.
        channels_last = q.is_contiguous(memory_format=torch.channels_last)
        if channels_last:
            q = q.permute(0, 2, 3, 1).reshape(b, h * w, heads, d).transpose(1, 2)
        else:
            q = q.reshape(b, heads, d, h * w).transpose(-2, -1)
        bands = self.filter(self.dwt(self.reduce(x)))
        local = self.idwt(bands)  # (b, reduced, h, w)
        k, v = self.kv_stat(lambda: self.keys_values(bands), b)
        out = attention(q, k, v)
        if channels_last:
            out = out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out = out.transpose(-2, -1).reshape(b, c, h, w)
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
