"""Single-level 2-D discrete wavelet transform and its inverse as strided (transposed) convs.

Filter taps come from PyWavelets; only orthogonal wavelets (haar, db*, sym*, coif*) are
accepted, because with periodic extension their analysis operator is orthogonal and the
inverse is simply its adjoint (a transposed conv plus folding the wrapped border back), so
``IDWT(DWT(x)) == x`` up to rounding. Height and width must be even.
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
    lo = torch.tensor(wavelet.rec_lo, dtype=torch.float64)
    hi = torch.tensor(wavelet.rec_hi, dtype=torch.float64)
    # First factor filters rows (height), second columns (width): LH = high along height.
    bank = [torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))]
    return torch.stack(bank).unsqueeze(1).float()


class DWT(nn.Module):
    """(b, c, h, w) -> (b, 4c, h/2, w/2), sub-band major: [LL | LH | HL | HH], each c channels."""

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        self.register_buffer("bank", wavelet_bank(wavelet), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"DWT needs even height and width, got {h}x{w}")
        taps = self.bank.shape[-1]
        y = x.reshape(b * c, 1, h, w)
        if taps > 2:
            y = F.pad(y, (0, taps - 2, 0, taps - 2), mode="circular")
        y = F.conv2d(y, self.bank.to(y.dtype), stride=2)  # (b*c, 4, h/2, w/2)
        return y.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


class IDWT(nn.Module):
    """Inverse of ``DWT``: (b, 4c, h, w) -> (b, c, 2h, 2w)."""

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        self.register_buffer("bank", wavelet_bank(wavelet), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c4, h, w = x.shape
        c = c4 // 4
        y = x.reshape(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)
        y = F.conv_transpose2d(y, self.bank.to(y.dtype), stride=2)
        extra = self.bank.shape[-1] - 2
        if extra:
            # Adjoint of the circular padding: fold what spilled past the border back to the start.
            y = y.clone()
            y[..., :extra, :] += y[..., 2 * h :, :]
            y = y[..., : 2 * h, :]
            y[..., :, :extra] += y[..., :, 2 * w :]
            y = y[..., :, : 2 * w]
        return y.reshape(b, c, 2 * h, 2 * w)
