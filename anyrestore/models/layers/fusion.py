"""Spatial-frequency fusion of two feature halves, AnyIR Sec. 3.5 and Alg. 2."""

from __future__ import annotations

import torch
from torch import nn


def spatial_fusion(f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
    """Alg. 2 steps 5-9: each half is enhanced by the sigmoid of the other, then concatenated."""
    # Alg. 2 step 6: gate-enhanced attention
    f_ag = f_att + torch.sigmoid(f_gate)
    # Alg. 2 step 7: attention-enhanced gate
    f_ga = f_gate + torch.sigmoid(f_att)
    # Alg. 2 step 8: channel-wise merge
    return torch.cat((f_ag, f_ga), dim=1)


def frequency_fusion(f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
    """Alg. 2 steps 10-15: add the halves' real 2-D spectra, invert, repeat to both halves.

    The FFT is linear, so as Alg. 2 states it this equals ``f_att + f_gate`` up to rounding:
    global in form, pixel-local in effect (tiles need nothing frozen for it).
    The FFT runs in float32 with autocast off: CPU rfft2/irfft2 have no bf16/fp16 kernels,
    and half precision spectra lose too much. The result is cast back to the input dtype.
    """
    h, w = f_att.shape[-2:]
    dtype = torch.promote_types(f_att.dtype, f_gate.dtype)
    with torch.autocast(device_type=f_att.device.type, enabled=False):
        # Alg. 2 step 11: real FFT of both halves
        spec_att = torch.fft.rfft2(f_att.float())
        spec_gate = torch.fft.rfft2(f_gate.float())
        # Alg. 2 step 12: combine in frequency; step 13: inverse FFT (s= keeps odd widths)
        f_freq = torch.fft.irfft2(spec_att + spec_gate, s=(h, w))
    # Alg. 2 step 14: repeat along channels to match the spatial branch (tiled, so channel j
    # of either concatenated half meets frequency channel j)
    return f_freq.to(dtype).repeat(1, 2, 1, 1)


class SpatialFrequencyFusion(nn.Module):
    """Alg. 2 with a learnable mixing weight lambda, followed by the W_fuse 1x1 conv of Eq. (9)."""

    def __init__(self, dim: int, bias: bool = False, lam: float = 0.5) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.w_fuse = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
        # Alg. 2 step 1: spatial cross-enhance
        f_s = spatial_fusion(f_att, f_gate)
        # Alg. 2 step 2: frequency detail-enhance
        f_f = frequency_fusion(f_att, f_gate)
        # Alg. 2 step 3: weighted fusion with learnable lambda
        lam = self.lam.to(f_s.dtype)
        f_fuse = lam * f_s + (1 - lam) * f_f
        # Eq. (9), first term: Conv_{W_fuse}(F_fuse); the caller adds F_in
        return self.w_fuse(f_fuse)
