"""Multi-Dconv head transposed attention (Restormer, Zamir et al. 2022).

Attention is taken across channels rather than pixels, so its cost grows linearly with
image size: a (c/heads x c/heads) map per head instead of (hw x hw). That map sums over every
pixel, so it is an image-wide statistic and goes through ``GlobalStat`` for tiled inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.bands import in_bands
from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.pointwise import PointwiseConv, pointwise


class TransposedAttention(nn.Module):
    """Q, K, V from a 1x1 then 3x3 depthwise conv; softmax over channel-channel scores.

    ``project`` adds an output 1x1 conv (Restormer has one; AnyIR's released code does not,
    its fusion conv follows directly).

    The maps are handled as (b, pixels, channels) tokens, a free view of a channels-last
    tensor, so nothing is transposed at full resolution; the output is channels-last too.
    Cosine similarity is the dot product divided by both norms, which equals normalising q
    and k first without materialising the normalised copies.
    """

    #: Set by ``anyrestore.models.base.step_by_step``: q.k and the norms as Eq. (7) writes
    #: them, not as one Gram matrix of [q | k] (more multiply-adds, fewer passes).
    step_by_step: bool = False

    def __init__(self, dim: int, heads: int, bias: bool = False, project: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        # Learned per-head temperature replaces the fixed 1/sqrt(d) of Eq. (7).
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = PointwiseConv(dim, dim * 3, bias=bias)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.proj = PointwiseConv(dim, dim, bias=bias) if project else None
        self.stats = GlobalStat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        if torch.is_grad_enabled():
            # Training: [q | k] and v as two dense maps from their own rows of the 1x1 and
            # depthwise convs (same parameters). As a channel slice of one qkv map, [q | k]
            # is copied whole before the Gram matrix's product and again in its backward.
            qk = self._project(x, 0, 2 * c).permute(0, 2, 3, 1).reshape(b, h * w, 2 * c)
            v = self._project(x, 2 * c, 3 * c).permute(0, 2, 3, 1).reshape(b, h * w, c)
            q, k = qk.split(c, dim=-1)
        else:
            # In bands of rows (memory; the 3x3 depthwise conv needs one row), one qkv map:
            # two band loops cost as much as the copy they would save.
            qkv = in_bands(lambda t: self.qkv_dw(self.qkv(t)), (x,), halo=1)
            tokens = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3 * c)  # views when channels-last
            qk, v = tokens[..., : 2 * c], tokens[..., 2 * c :]
            q, k = qk.split(c, dim=-1)

        if qk.dtype == torch.float16:
            # The products sum over every pixel and fp16 stops at 65,504 (a 512 px tile
            # overflows once q^2 averages 0.25), and a quiet channel's squared norm falls
            # below its smallest value. Each channel divided by its own norm (in fp32) makes
            # the Gram matrix hold the cosines themselves, in [-1, 1] at any scale. The cosine
            # does not change; fp32 and bf16 (fp32's range) are left as they are.
            norm = torch.linalg.vector_norm(qk, dim=1, keepdim=True, dtype=torch.float32)
            qk = (qk.float() / norm.clamp_min(1e-12)).to(torch.float16)
            q, k = qk.split(c, dim=-1)

        def channel_attention() -> torch.Tensor:
            # Eq. (7): softmax(q_hat k_hat^T * temperature) per head, q_hat and k_hat
            # normalised over the pixels (F.normalize's eps as the norms' floor)
            if self.step_by_step:
                qh = q.reshape(b, h * w, heads, d).permute(0, 2, 3, 1)  # (b, heads, d, hw)
                kh = k.reshape(b, h * w, heads, d).permute(0, 2, 1, 3)  # (b, heads, hw, d)
                gram = (qh @ kh).float()
                norms = torch.linalg.vector_norm(qk, dim=1, dtype=torch.float32)
            else:
                # One Gram matrix of [q | k] holds every q.k product (its off-diagonal block)
                # and the squared norms (its diagonal): one pass over the pixels instead of a
                # matrix product plus a strided reduction.
                # The diagonals are taken as masked sums (exact: the rest adds zeros) because
                # ``diagonal`` does not convert to OpenVINO; the matrices are small.
                full = (qk.transpose(1, 2) @ qk).float()  # (b, 2c, 2c)
                eye = torch.eye(2 * c, dtype=full.dtype, device=full.device)
                norms = (full * eye).sum(-1).clamp_min(0).sqrt()
                cross = full[:, :c, c:].reshape(b, heads, d, heads, d)
                same_head = eye[:heads, :heads].reshape(1, heads, 1, heads, 1)
                gram = (cross * same_head).sum(3)  # (b, heads, d, d)
            norms = norms.clamp_min(1e-12)
            qn = norms[:, :c].reshape(b, heads, d, 1)
            kn = norms[:, c:].reshape(b, heads, 1, d)
            attn = gram / (qn * kn) * self.temperature
            return attn.softmax(dim=-1)

        attn = self.stats(channel_attention, batch=b).to(v.dtype)
        # out_i = sum_j attn_ij v_j, as tokens: (hw, d) @ attn^T for each head
        vh = v.reshape(b, h * w, heads, d).transpose(1, 2)  # (b, heads, hw, d)
        out = (vh @ attn.transpose(-2, -1)).transpose(1, 2).reshape(b, h, w, c)
        out = out.permute(0, 3, 1, 2)  # channels-last (b, c, h, w)
        return self.proj(out) if self.proj is not None else out

    def _project(self, x: torch.Tensor, first: int, end: int) -> torch.Tensor:
        """Channels ``first:end`` of ``qkv_dw(qkv(x))``, computed from those rows alone."""
        bias = self.qkv.bias
        mixed = pointwise(
            x, self.qkv.weight.flatten(1)[first:end], None if bias is None else bias[first:end]
        )
        dw = self.qkv_dw
        dw_bias = None if dw.bias is None else dw.bias[first:end]
        return F.conv2d(mixed, dw.weight[first:end], dw_bias, padding=1, groups=end - first)
