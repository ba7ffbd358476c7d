"""Spatial-frequency fusion of two feature halves, AnyIR Sec. 3.5 and Alg. 2."""

from __future__ import annotations

import torch
from torch import nn

from anyrestore.models.layers.pointwise import PointwiseConv


def spatial_fusion(f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
    """Alg. 2 steps 5-9: each half is enhanced by the sigmoid of the other, then concatenated."""
    # Alg. 2 step 6: gate-enhanced attention
    f_ag = f_att + torch.sigmoid(f_gate)
    # Alg. 2 step 7: attention-enhanced gate
    f_ga = f_gate + torch.sigmoid(f_att)
    # Alg. 2 step 8: channel-wise merge
    return torch.cat((f_ag, f_ga), dim=1)


def frequency_fusion_fft(f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
    """Alg. 2 steps 10-13 as written: add the halves' real 2-D spectra and invert.

    The FFT is linear, so this is ``f_att + f_gate`` up to rounding; ``frequency_fusion``
    computes that sum directly and a test holds the two equal. Kept as the reference form.
    """
    h, w = f_att.shape[-2:]
    with torch.autocast(device_type=f_att.device.type, enabled=False):
        spectrum = torch.fft.rfft2(f_att.float()) + torch.fft.rfft2(f_gate.float())
        return torch.fft.irfft2(spectrum, s=(h, w))


def frequency_fusion(f_att: torch.Tensor, f_gate: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Alg. 2 steps 10-15: the halves summed (their spectra, inverted) and widened to both halves.

    Step 14 repeats the C/2 channels to C. ``interleave`` repeats each channel in place
    (0, 0, 1, 1, ...), as the released code does; otherwise the block is tiled (0, 1, ..., 0, 1,
    ...), as the preview weights were trained. The sum is pixel-local, so tiles need nothing
    frozen for it.
    """
    f_freq = f_att + f_gate
    if interleave:
        return f_freq.repeat_interleave(2, dim=1)
    return f_freq.repeat(1, 2, 1, 1)


class SpatialFrequencyFusion(nn.Module):
    """Alg. 2 with a learnable mixing weight lambda, followed by the W_fuse 1x1 conv of Eq. (9)."""

    def __init__(
        self, dim: int, bias: bool = False, lam: float = 0.5, interleave: bool = True
    ) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.w_fuse = PointwiseConv(dim, dim, bias=bias)
        self.interleave = interleave

    def forward(self, f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
        # Alg. 2 step 1: spatial cross-enhance
        f_s = spatial_fusion(f_att, f_gate)
        # Alg. 2 step 2: frequency detail-enhance
        f_f = frequency_fusion(f_att, f_gate, self.interleave)
        # Alg. 2 step 3: weighted fusion with learnable lambda
        lam = self.lam.to(f_s.dtype)
        f_fuse = torch.lerp(f_f, f_s, lam)
        # Eq. (9), first term: Conv_{W_fuse}(F_fuse); the caller adds F_in
        return self.w_fuse(f_fuse)
