"""The bounded whole-image view that global statistics are recorded on before tiling.

AnyIR and ClusIR pool statistics over the whole image (GatedDA mean/std, channel attention,
routing, FFT priors). Before tiled inference the engine runs the model once on a reference
no larger than ``max_side`` pixels per side, records every ``GlobalStat`` and replays the
values for each tile (see ``anyrestore.models.layers.globalstats``). How the reference is
made matters because degradations are scale dependent: area downscaling averages noise away
(the model then sees a cleaner image than it restores), a centre crop keeps the native scale
but misses the rest of the scene, a mosaic of native-scale patches keeps the noise but adds
seams, and strided subsampling keeps per-pixel statistics (noise level, colour histogram)
and the whole scene at the cost of aliasing. Strided subsampling gave the closest tiled
output in our measurements, so it is the default; docs/inference.md has the numbers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Method = Literal["stride", "mosaic", "area", "crop", "live"]
#: "live" records nothing: every tile uses its own statistics (for comparison).
METHODS: tuple[str, ...] = ("stride", "mosaic", "area", "crop", "live")
#: The mosaic is a MOSAIC_GRID x MOSAIC_GRID grid of patches (fewer along a short side).
MOSAIC_GRID = 4


def _evenly_spaced(size: int, patch: int, count: int) -> list[int]:
    if count == 1:
        return [(size - patch) // 2]
    return [round(i * (size - patch) / (count - 1)) for i in range(count)]


def make_reference(x: torch.Tensor, max_side: int, method: Method = "stride") -> torch.Tensor:
    """A (1,c,h',w') view of the (1,c,h,w) image ``x`` with ``max(h', w') <= max_side``."""
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    if method == "crop":
        ch, cw = min(h, max_side), min(w, max_side)
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top : top + ch, left : left + cw]
    if method == "stride":
        step = math.ceil(max(h, w) / max_side)
        # The pixel nearest each step x step block's centre, where resampling a recorded map
        # back to the image's grid puts it (from the block's corner it lands (step-1)/2 px
        # off; half a pixel remains for an even step).
        first = (step - 1) // 2
        # ... but never past a side shorter than that (a panorama one pixel high)
        return x[..., min(first, h - 1) :: step, min(first, w - 1) :: step]
    scale = max_side / max(h, w)
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    if method == "area":
        return F.interpolate(x, size=(rh, rw), mode="area")
    if method == "mosaic":
        patch = max(1, min(max_side // MOSAIC_GRID, h, w))
        ny, nx = max(1, rh // patch), max(1, rw // patch)
        rows = []
        for y in _evenly_spaced(h, patch, ny):
            rows.append(
                torch.cat(
                    [x[..., y : y + patch, xx : xx + patch] for xx in _evenly_spaced(w, patch, nx)],
                    dim=-1,
                )
            )
        return torch.cat(rows, dim=-2)
    raise ValueError(f"unknown reference method {method!r}; use one of {', '.join(METHODS)}")


def reference_scale(
    size: tuple[int, int], max_side: int, method: Method
) -> tuple[float, float] | None:
    """Image pixels per pixel of ``make_reference``'s result, along (height, width).

    None where the reference is not the whole image at one scale (a crop or a mosaic).
    """
    h, w = size
    if max(h, w) <= max_side:
        return (1.0, 1.0)
    if method == "stride":
        step = float(math.ceil(max(h, w) / max_side))
        return (step, step)
    if method == "area":
        scale = max_side / max(h, w)
        return (h / max(1, round(h * scale)), w / max(1, round(w * scale)))
    return None
