"""Camera-shake motion blur with random trajectory kernels (GoPro-like blur)."""

from __future__ import annotations

from torch import Tensor

from anyrestore.data.degradations._rng import Draw
from anyrestore.data.degradations.kernels import filter2d, trajectory_kernels

#: Longest side of the ``blur`` kind's camera-shake trajectory, in pixels.
BLUR_EXTENT = (5.0, 21.0)
#: The same for the training-only ``slight_blur`` kind: the shake of a steadier hand. A model that
#: has only seen 5-21 px trajectories oversharpens a slightly shaken photo and does it more harm
#: than the shake did.
SLIGHT_BLUR_EXTENT = (2.0, 9.0)


def motion_blur(x: Tensor, draw: Draw, extent: tuple[float, float] = BLUR_EXTENT) -> Tensor:
    """Convolve each image with its own random trajectory kernel spanning ``extent`` pixels."""
    span = draw.uniform(*extent)
    curviness = draw.uniform(0.0, 1.5)
    return filter2d(x, trajectory_kernels(draw, span, curviness), padding="reflect")
