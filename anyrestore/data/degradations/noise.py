"""Additive white Gaussian noise, as the papers' denoising tasks synthesise it (AnyIR App. A.1)."""

from __future__ import annotations

from torch import Tensor

from anyrestore.data.degradations._rng import Draw


def gaussian_noise(x: Tensor, draw: Draw, sigma: float) -> Tensor:
    """x + N(0, sigma/255) independently per pixel and channel (sigma on the 0-255 scale)."""
    return x + draw.randn(*x.shape) * (sigma / 255.0)
