"""Single-level 2-D discrete wavelet transform and its inverse as strided (transposed) convs.

Filter taps come from PyWavelets; only orthogonal wavelets (haar, db*, sym*, coif*) are
accepted, because with periodic extension their analysis operator is orthogonal and the
inverse is simply its adjoint (a transposed conv plus folding the wrapped border back), so
``IDWT(DWT(x)) == x`` up to rounding. Height and width must be even.

Haar, the default, has 2x2 filters that do not overlap: its transform is sums and
differences of the four pixels of each 2x2 block, computed directly (``haar_dwt``,
``haar_idwt``) instead of as a one-channel convolution over every channel, which was slow and
copied channels-last maps to NCHW. Other wavelets take the convolution path.
"""

from __future__ import annotations

import pywt
import torch
import torch.nn.functional as F
from torch import nn


def wavelet_bank(name: str) -> torch.Tensor:
    """The four separable 2-D analysis filters (LL, LH, HL, HH) of ``name``, shape (4, 1, L, L)."""
    try:
        wavelet = pywt.Wavelet(name)
    except ValueError:
        raise ValueError(f"unknown wavelet {name!r}") from None
    if not wavelet.orthogonal:
        raise ValueError(f"wavelet {name!r} is not orthogonal; use e.g. 'haar', 'db2' or 'sym4'")
    # Correlating with the reconstruction filters is convolving with the decomposition ones.
    lo, hi = wavelet.rec_lo, wavelet.rec_hi
    # First factor filters rows (height), second columns (width): LH = high along height.
    # The outer products are taken in Python: on the meta device, where a checkpoint's
    # skeleton is built to check shapes before anything is allocated, torch.outer (like
    # normal_ and orthogonal_) runs Python reference kernels whose first use imports
    # torch._dynamo, seconds of a process's start.
    bank = [
        [[r * c for c in cols] for r in rows]
        for rows, cols in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))
    ]
    return torch.tensor(bank, dtype=torch.float64).unsqueeze(1).float()


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """The Haar ``DWT`` as sums and differences of each 2x2 block's pixels."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]  # top-left, top-right
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]  # bottom-left, bottom-right
    top_sum, top_diff = a + b, a - b
    bottom_sum, bottom_diff = c + d, c - d
    # Rows of the bank: LL = (a+b+c+d)/2, LH = (a+b-c-d)/2, HL = (a-b+c-d)/2, HH = (a-b-c+d)/2.
    bands = [
        top_sum + bottom_sum,
        top_sum - bottom_sum,
        top_diff + bottom_diff,
        top_diff - bottom_diff,
    ]
    return torch.cat(bands, dim=1).mul_(0.5)


def haar_idwt(x: torch.Tensor) -> torch.Tensor:
    """The Haar ``IDWT``: each 2x2 block from its four coefficients (the bank is symmetric)."""
    b, c4, h, w = x.shape
    c = c4 // 4
    ll, lh, hl, hh = x[:, :c], x[:, c : 2 * c], x[:, 2 * c : 3 * c], x[:, 3 * c :]
    low_sum, low_diff = ll + lh, ll - lh
    high_sum, high_diff = hl + hh, hl - hh
    if torch.is_grad_enabled() and x.requires_grad:  # out= below is not differentiable
        top = torch.stack([low_sum + high_sum, low_sum - high_sum], dim=-1)
        bottom = torch.stack([low_diff + high_diff, low_diff - high_diff], dim=-1)
        return torch.stack([top, bottom], dim=3).reshape(b, c, 2 * h, 2 * w).mul(0.5)
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    out = torch.empty((b, c, 2 * h, 2 * w), dtype=x.dtype, device=x.device, memory_format=layout)
    torch.add(low_sum, high_sum, out=out[..., 0::2, 0::2])
    torch.sub(low_sum, high_sum, out=out[..., 0::2, 1::2])
    torch.add(low_diff, high_diff, out=out[..., 1::2, 0::2])
    torch.sub(low_diff, high_diff, out=out[..., 1::2, 1::2])
    return out.mul_(0.5)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


class DWT(nn.Module):
    """(b, c, h, w) -> (b, 4c, h/2, w/2), sub-band major: [LL | LH | HL | HH], each c channels."""

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        self.haar = wavelet == "haar"
        self.register_buffer("bank", wavelet_bank(wavelet), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"DWT needs even height and width, got {h}x{w}")
        if self.haar:
            return haar_dwt(x)
        return self.convolve(x)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The transform as a strided one-channel convolution, for any orthogonal wavelet."""
        b, c, h, w = x.shape
        taps = self.bank.shape[-1]
        y = x.reshape(b * c, 1, h, w)
        if taps > 2:
            # Periodic extension by taps - 2, wrapping as often as it takes: the deepest maps
            # can be smaller than a long wavelet (2x2 against sym4's 6).
            extra = taps - 2
            y = y.index_select(-2, torch.arange(h + extra, device=y.device) % h)
            y = y.index_select(-1, torch.arange(w + extra, device=y.device) % w)
        y = F.conv2d(y, self.bank.to(y.dtype), stride=2)  # (b*c, 4, h/2, w/2)
        return y.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


class IDWT(nn.Module):
    """Inverse of ``DWT``: (b, 4c, h, w) -> (b, c, 2h, 2w)."""

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        self.haar = wavelet == "haar"
        self.register_buffer("bank", wavelet_bank(wavelet), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return haar_idwt(x) if self.haar else self.convolve(x)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse as a strided transposed convolution, for any orthogonal wavelet."""
        b, c4, h, w = x.shape
        c = c4 // 4
        y = x.reshape(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)
        y = F.conv_transpose2d(y, self.bank.to(y.dtype), stride=2)
        extra = self.bank.shape[-1] - 2
        if extra:
            # Adjoint of the periodic extension: fold what spilled past the border back onto
            # the map, as often as it wrapped.
            rows = torch.arange(2 * h + extra, device=y.device) % (2 * h)
            y = y.new_zeros(*y.shape[:-2], 2 * h, y.shape[-1]).index_add(-2, rows, y)
            cols = torch.arange(2 * w + extra, device=y.device) % (2 * w)
            y = y.new_zeros(*y.shape[:-1], 2 * w).index_add(-1, cols, y)
        return y.reshape(b, c, 2 * h, 2 * w)
