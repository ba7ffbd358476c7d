"""Degradation-aware frequency modulation module (DAFMM), ClusIR Sec. 3.3, Eq. (11)-(15).

A DWT splits the features into a low band and three high bands. The frequency self-mining
block (FSB) filters the low band with a per-image, softmax-normalised 3x3 kernel to separate
what is really low-frequency from the residual detail the DWT left in it. The clean low part
has its Fourier amplitude and phase modulated together with the degradation prompt; the
high bands and the mined detail are gated channel-wise by the prompt; an inverse DWT puts
them back together.

The spectral modulation is residual (a gain on the amplitude, a shift of the phase), not a
fresh prediction of both: a network that predicts the amplitude outright adds its biases to
every frequency, including those the image does not have, and a flat amplitude with zero
phase is a spike at pixel (0, 0). That put bright coloured pixels in the top-left corner of
flat regions, growing with the image size (with orthonormal FFTs). With a gain, a frequency
that is absent stays absent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.globalstats import GlobalMap, GlobalStat
from anyrestore.models.layers.init import init_unless_meta
from anyrestore.models.layers.wavelets import DWT, IDWT


class FrequencySelfMining(nn.Module):
    """FSB: content-adaptive low-pass filter from pooled statistics; high = input - low."""

    def __init__(self, dim: int, kernel_size: int = 3, groups: int = 8) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = math.gcd(dim, groups)
        self.stat = GlobalStat()
        self.to_kernel = nn.Conv2d(dim, self.groups * kernel_size**2, 1)

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """Per image and channel group, the k*k low-pass taps (summing to 1): (b, groups, k*k)."""
        # Eq. (11): W = softmax(Conv(GAP(X_L))) over the k*k taps
        pooled = x.mean(dim=(2, 3), keepdim=True)
        taps = self.to_kernel(pooled).reshape(x.shape[0], self.groups, self.kernel_size**2)
        return taps.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        k = self.kernel_size
        taps = self.stat(lambda: self.kernel(x), b)
        # Eq. (12): X_low(i) = sum_j W_j * X_L(i + j) over the k*k patch around each pixel i,
        # a depthwise convolution whose taps differ per image (images folded into channels)
        weight = taps.repeat_interleave(c // self.groups, dim=1).reshape(b * c, 1, k, k)
        padded = F.pad(x, (k // 2,) * 4, mode="replicate").reshape(1, b * c, h + k - 1, w + k - 1)
        low = F.conv2d(padded, weight.to(padded.dtype), groups=b * c).reshape(b, c, h, w)
        # Eq. (13): X_high = X_L - X_low
        return low, x - low


class _SpectralFuse(nn.Module):
    """1x1 conv, LeakyReLU, 1x1 conv over [spectrum component, prompt] channels.

    The last conv starts near zero (not at zero, so the first conv gets gradients from the
    first step), so the modulation starts close to the identity (gain 1, shift 0).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2 * dim, dim, 1), nn.LeakyReLU(0.1), nn.Conv2d(dim, dim, 1)
        )
        init_unless_meta(self.body[2].weight, nn.init.normal_, std=1e-4)
        nn.init.zeros_(self.body[2].bias)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        x = x.to(self.body[0].weight.dtype)  # the spectrum's float32 into a model cast whole
        p = prompt[:, :, None, None].to(x.dtype).expand(-1, -1, *x.shape[-2:])
        return self.body(torch.cat([x, p], dim=1))


class DAFMM(nn.Module):
    """Residual frequency modulation of a feature map by a (b, dim) degradation prompt."""

    max_log_gain = 4.0  # amplitude gains stay within exp(+-4): no overflow from a wild input

    def __init__(self, dim: int, wavelet: str = "haar") -> None:
        super().__init__()
        self.dwt = DWT(wavelet)
        self.idwt = IDWT(wavelet)
        self.fsb = FrequencySelfMining(dim)
        self.amplitude = _SpectralFuse(dim)
        self.phase = _SpectralFuse(dim)
        self.high = nn.Conv2d(4 * dim, 4 * dim, 1)
        self.high_gate = nn.Linear(dim, 4 * dim)
        self.out = nn.Conv2d(dim, dim, 1)
        self.spectral = GlobalMap()

    def low_frequency(self, low: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Eq. (14): amplitude and phase of the low band modulated with the prompt."""
        h, w = low.shape[-2:]
        work = torch.promote_types(low.dtype, torch.float32)  # at least float32
        # "forward" scaling: the DC term is the mean, the same at any image or tile size.
        spectrum = torch.fft.rfft2(low.to(work), norm="forward")
        amplitude, phase = spectrum.abs(), spectrum.angle()
        # Eq. (14), residual form (module docstring): A' = A * exp(F_A(Concat(log1p A, P))),
        # Phi' = Phi + F_P(Concat(Phi, P)), X^_L = IFFT(A' exp(i Phi')). log1p tames the
        # amplitudes' range for the 1x1 convs; the gain is bounded by tanh.
        log_gain = self.amplitude(torch.log1p(amplitude), prompt).to(work)
        log_gain = self.max_log_gain * torch.tanh(log_gain / self.max_log_gain)
        shift = self.phase(phase, prompt).to(work)
        fused = torch.polar(amplitude * torch.exp(log_gain), phase + shift)
        return torch.fft.irfft2(fused, s=(h, w), norm="forward").to(low.dtype)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        bands = self.dwt(x)
        ll, highs = bands[:, :c], bands[:, c:]
        low, detail = self.fsb(ll)
        # The FFT spans the whole map: tiles replay what it added on the whole image.
        low = low + self.spectral(lambda: self.low_frequency(low, prompt) - low, low)
        # Eq. (15): X^_H = Conv(Concat(X_LH, X_HL, X_HH, X_high)) * sigmoid(W_p P)
        gate = torch.sigmoid(self.high_gate(prompt))[:, :, None, None]
        mixed = self.high(torch.cat([highs, detail], dim=1)) * gate.to(x.dtype)
        highs, detail = mixed[:, : 3 * c], mixed[:, 3 * c :]
        restored = self.idwt(torch.cat([low + detail, highs], dim=1))
        return x + self.out(restored)
