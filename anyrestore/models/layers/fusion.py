"""Spatial-frequency fusion of two feature halves, AnyIR Sec. 3.5 and Alg. 2."""

from __future__ import annotations

import torch
from torch import nn

from anyrestore.models.layers.bands import in_bands
from anyrestore.models.layers.pointwise import PointwiseConv, pointwise


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
    """Alg. 2 with a learnable mixing weight lambda, followed by the W_fuse 1x1 conv of Eq. (9).

    Everything in Alg. 2 but the two sigmoids is linear, and so is W_fuse; the module computes
    ``W_fuse(lerp(F_f, F_s, lambda))`` as ``A t + B sigmoid(t)`` with ``t = cat(F_att,
    F_gate)``, where A and B fold the frequency sum and its widening, the spatial sums and
    concatenation, lambda and W_fuse into two (C x C) matrices. That is the same function
    (``reference`` computes it step by step, and a test holds the two equal) in two matrix
    products instead of eight passes over the feature map. With ``step_by_step`` set
    (``anyrestore.models.base.step_by_step``) it runs ``reference`` instead.
    """

    step_by_step: bool = False

    def __init__(
        self, dim: int, bias: bool = False, lam: float = 0.5, interleave: bool = True
    ) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.w_fuse = PointwiseConv(dim, dim, bias=bias)
        self.interleave = interleave

    def reference(self, f_att: torch.Tensor, f_gate: torch.Tensor) -> torch.Tensor:
        """Alg. 2 and W_fuse step by step, as the paper writes them."""
        # Alg. 2 step 1: spatial cross-enhance
        f_s = spatial_fusion(f_att, f_gate)
        # Alg. 2 step 2: frequency detail-enhance
        f_f = frequency_fusion(f_att, f_gate, self.interleave)
        # Alg. 2 step 3: weighted fusion with learnable lambda
        f_fuse = torch.lerp(f_f, f_s, self.lam.to(f_s.dtype))
        # Eq. (9), first term: Conv_{W_fuse}(F_fuse); the caller adds F_in
        return self.w_fuse(f_fuse)

    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B), each (C, C): the output is ``A cat(a, g) + B cat(sigmoid(a), sigmoid(g))``.

        With W = W_fuse split into the columns that read the first and second half of F_s (W1,
        W2), and W_f = (1 - lambda) W R where R widens the frequency sum back to C channels:
        a enters as W_f + lambda W1, g as W_f + lambda W2, sigmoid(a) as lambda W2 (it is
        added to g in Alg. 2 step 7) and sigmoid(g) as lambda W1.
        """
        w = self.w_fuse.weight.flatten(1)
        half = w.shape[1] // 2
        lam = self.lam
        if self.interleave:  # channel i of the sum feeds output channels 2i and 2i + 1
            w_f = w[:, 0::2] + w[:, 1::2]
        else:  # channel i feeds channels i and i + C/2
            w_f = w[:, :half] + w[:, half:]
        w_f = (1 - lam) * w_f
        w1, w2 = w[:, :half], w[:, half:]
        a = torch.cat((w_f + lam * w1, w_f + lam * w2), dim=1)
        b = lam * torch.cat((w2, w1), dim=1)
        return a, b

    def forward(
        self, f_att: torch.Tensor, f_gate: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Alg. 2 + Conv_{W_fuse}, plus ``residual`` (Eq. (9)'s F_in) when given."""
        if self.step_by_step:
            out = self.reference(f_att, f_gate)
            return out if residual is None else out + residual
        a, b = self.folded_weights()

        def fused(
            f_att: torch.Tensor, f_gate: torch.Tensor, residual: torch.Tensor | None
        ) -> torch.Tensor:
            t = torch.cat((f_att, f_gate), dim=1)
            y = pointwise(t, a, self.w_fuse.bias, residual)
            return pointwise(torch.sigmoid(t), b, add=y)

        # Pixel-local: in bands of rows without gradients (memory)
        return in_bands(fused, (f_att, f_gate, residual), halo=0)
