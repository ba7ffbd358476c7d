"""Camera-shake motion blur with random trajectory kernels (GoPro-like blur)."""

from __future__ import annotations

import math

from torch import Tensor

from anyrestore.data.degradations._rng import Draw
from anyrestore.data.degradations.kernels import filter2d, trajectory_kernels


def motion_blur(x: Tensor, draw: Draw) -> Tensor:
    """Convolve each image with its own random trajectory kernel spanning 5 to 21 pixels."""
    extent = draw.uniform(5.0, 21.0)
    curviness = draw.uniform(0.0, 1.5)
    size = 2 * math.ceil(float(extent.max()) / 2) + 3
    kernels = trajectory_kernels(draw, extent, curviness, size)
    return filter2d(x, kernels, padding="reflect")
