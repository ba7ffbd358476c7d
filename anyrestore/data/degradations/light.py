"""Low light: a darkening tone curve followed by signal-dependent sensor noise."""

from __future__ import annotations

import torch
from torch import Tensor

from anyrestore.data.degradations._rng import Draw, expand


def low_light(x: Tensor, draw: Draw) -> Tensor:
    """y = s * x**gamma, then Poisson-Gaussian noise with variance ``gain * y + read**2``.

    The power curve crushes shadows more than highlights, as an under-exposed photo does; the
    noise is the usual heteroscedastic Gaussian approximation of shot plus read noise, strong
    relative to the dim signal (visible once the image is brightened).
    """
    gamma = expand(draw.uniform(1.3, 2.0))
    scale = expand(draw.uniform(0.12, 0.4))
    y = scale * x.clamp(0, 1) ** gamma
    gain = expand(draw.log_uniform(1 / 2000, 1 / 250))  # 1 / (photons at full scale)
    read = expand(draw.uniform(0.002, 0.01))
    std = torch.sqrt(gain * y + read**2)
    return y + std * draw.randn(*x.shape)
