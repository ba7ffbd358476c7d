"""Weather: haze (atmospheric scattering), rain streaks and snow flakes, synthesised per image."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from anyrestore.data.degradations._rng import Draw, expand
from anyrestore.data.degradations.kernels import capsule_kernels, filter2d, smooth_field


def synthetic_depth(draw: Draw, h: int, w: int) -> Tensor:
    """Relative depth in [near, 1], shape (b, 1, h, w): a tilted top-far gradient plus a smooth field.

    Outdoor photos are mostly farther at the top; the random field breaks the gradient into
    blobs so the haze is not a plain vertical ramp.
    """
    tilt = expand(draw.uniform(-0.5, 0.5))
    ys = torch.linspace(0, 1, h, device=draw.device).view(1, 1, h, 1)
    xs = torch.linspace(-0.5, 0.5, w, device=draw.device).view(1, 1, 1, w)
    ramp = 1 - (ys * torch.cos(tilt) + xs * torch.sin(tilt))
    ramp = ramp - ramp.amin(dim=(-2, -1), keepdim=True)
    ramp = ramp / ramp.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    mix = expand(draw.uniform(0.2, 0.6))
    depth = (1 - mix) * ramp + mix * smooth_field(draw, h, w, cells=5)
    near = expand(draw.uniform(0.15, 0.45))
    return near + (1 - near) * depth


def _scatter(
    x: Tensor, draw: Draw, beta: tuple[float, float], airlight: tuple[float, float]
) -> Tensor:
    """I = J t + A (1 - t), t = exp(-beta d), with a synthetic depth d and a greyish airlight A."""
    b, _, h, w = x.shape
    depth = synthetic_depth(draw, h, w)
    t = torch.exp(-expand(draw.uniform(*beta)) * depth)  # transmission
    light = expand(draw.uniform(*airlight))
    # a slight per-channel tint (skies scatter a little more blue)
    tint = (
        1
        + 0.03 * (draw.rand(b, 3, 1, 1) * 2 - 1)
        + torch.tensor([-0.01, 0.0, 0.015], device=x.device).view(1, 3, 1, 1)
    )
    a = (light * tint).clamp(max=1.0)
    return x * t + a * (1 - t)


# Haze to remove: at the far end of the depth range 11-45 % of the scene light gets through.
HAZE_BETA = (0.8, 2.2)
HAZE_AIRLIGHT = (0.75, 1.0)
# Mist that belongs to the scene (``mist``): 61-90 % gets through at the far end, always more
# than under the lightest haze, and its light may be dim (a forest at dusk).
MIST_BETA = (0.1, 0.5)
MIST_AIRLIGHT = (0.3, 1.0)


def haze(x: Tensor, draw: Draw) -> Tensor:
    """Atmospheric scattering dense enough that a restorer should take it away."""
    return _scatter(x, draw, HAZE_BETA, HAZE_AIRLIGHT)


def mist(x: Tensor, draw: Draw) -> Tensor:
    """A light veil of the same physics, not a degradation: used to make clean training scenes misty.

    Not in the kinds: ``RestorationDataset(misty_scenes=...)`` applies it to a clean crop and its
    target alike, so a model does not treat every misty photo as hazy (before it saw any, a
    misty forest came back 15-27 % darker).
    """
    return _scatter(x, draw, MIST_BETA, MIST_AIRLIGHT)


def _sparse_seeds(draw: Draw, h: int, w: int, density: Tensor, lo: float, hi: float) -> Tensor:
    """(b, 1, h, w): zero except a fraction ``density`` of pixels holding an intensity in [lo, hi]."""
    hit = draw.rand(draw.b, 1, h, w) < expand(density)
    return hit * (lo + (hi - lo) * draw.rand(draw.b, 1, h, w))


def _kernel_size(length: Tensor, radius: Tensor, softness: Tensor) -> int:
    reach = float((length / 2 + radius + 4 * softness).max())
    return 2 * math.ceil(reach) + 1


def _stamp(
    seeds: Tensor, length: Tensor, radius: Tensor, softness: Tensor, angle: Tensor
) -> Tensor:
    """Draw a capsule at every seed (its peak scaled by the seed's value); result in [0, 1]."""
    size = _kernel_size(length, radius, softness)
    kernels = capsule_kernels(length, radius, softness, angle, size)
    return filter2d(seeds, kernels, padding="zeros").clamp(0, 1)


def rain(x: Tensor, draw: Draw) -> Tensor:
    """Screen-blend two layers of straight streaks (near: long, bright; far: shorter, fainter).

    An image's near streaks share a wind angle (within 26 degrees of vertical), its far ones
    one within 3 degrees of that; lengths 10-30 px,
    widths about 1-2 px, densities spanning light to heavy rain; a faint veil brightens the scene.
    """
    b, _, h, w = x.shape
    angle = draw.uniform(-0.45, 0.45)
    length = draw.uniform(10.0, 30.0)
    radius = draw.uniform(0.35, 0.7)
    density = draw.log_uniform(0.0015, 0.006)
    softness = torch.full_like(length, 0.35)
    near = _stamp(_sparse_seeds(draw, h, w, density, 0.5, 1.0), length, radius, softness, angle)
    far_angle = angle + draw.uniform(-0.05, 0.05)
    far = _stamp(
        _sparse_seeds(draw, h, w, density * 1.5, 0.3, 0.7),
        length * 0.5,
        radius * 0.7,
        softness,
        far_angle,
    )
    layer = 1 - (1 - near) * (1 - far)
    strength = expand(draw.uniform(0.45, 0.85))
    out = 1 - (1 - x) * (1 - strength * layer)  # screen blend
    veil = expand(draw.uniform(0.0, 0.08))
    return out + veil * (1 - out)


# per layer: density, radius (px), edge softness (px), fall streak length (px), opacity
_SNOW_LAYERS = (
    ((0.002, 0.006), (0.5, 1.0), (0.25, 0.4), (0.0, 2.0), (0.7, 1.0)),  # far: small, sharp
    ((0.0004, 0.0012), (1.2, 2.2), (0.4, 0.8), (0.0, 3.0), (0.75, 1.0)),  # middle
    (
        (0.00005, 0.0002),
        (2.5, 4.5),
        (1.0, 2.0),
        (0.0, 2.0),
        (0.5, 0.85),
    ),  # near the lens: big, blurred
)


def snow(x: Tensor, draw: Draw) -> Tensor:
    """A light veil, then three layers of flakes (small sharp, medium, large out-of-focus).

    Flakes fall along one per-image angle (within 23 degrees of vertical), slightly streaked by
    motion; they are composited opaquely over the scene in a near-white colour.
    """
    b, _, h, w = x.shape
    veil = expand(draw.uniform(0.04, 0.15))
    out = x * (1 - veil) + 0.9 * veil
    angle = draw.uniform(-0.4, 0.4)
    mask = torch.zeros(b, 1, h, w, device=x.device)
    for density, radius, softness, fall, opacity in _SNOW_LAYERS:
        seeds = _sparse_seeds(draw, h, w, draw.log_uniform(*density), 0.6, 1.0)
        flakes = _stamp(
            seeds, draw.uniform(*fall), draw.uniform(*radius), draw.uniform(*softness), angle
        )
        mask = 1 - (1 - mask) * (1 - flakes * expand(draw.uniform(*opacity)))
    colour = expand(draw.uniform(0.9, 1.0))
    return out * (1 - mask) + colour * mask
