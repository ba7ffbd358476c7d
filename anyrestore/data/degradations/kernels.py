"""Per-image kernels (streaks, flakes, motion trajectories), their application, smooth fields.

Every function works on a whole batch at once: each image has its own kernel, applied with a
grouped convolution (small kernels) or an FFT product (large ones).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from anyrestore.data.degradations._rng import Draw

# Above this kernel size an FFT product beats a grouped direct convolution on CPU and GPU.
FFT_MIN_KERNEL = 17


def kernel_grid(size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates (x right, y down) of a size x size kernel, origin at its centre."""
    r = (size - 1) / 2
    coords = torch.arange(size, device=device, dtype=torch.float32) - r
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return x, y


def capsule_kernels(
    length: Tensor, radius: Tensor, softness: Tensor, angle: Tensor, size: int
) -> Tensor:
    """Soft capsules (a segment thickened by ``radius``), peak about 1; shape (b, size, size).

    ``angle`` is measured from the vertical (radians, positive leans right at the bottom), so a
    long thin capsule is a rain streak and a short fat one a snow flake; ``softness`` is the
    width of the edge (larger = more out of focus).
    """
    x, y = kernel_grid(size, length.device)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    along = x * s + y * c  # coordinate along the segment direction
    across = x * c - y * s
    half = (length / 2).view(-1, 1, 1)
    beyond = (along.abs() - half).clamp(min=0)  # distance past either end
    dist = torch.sqrt(beyond**2 + across**2)
    return torch.sigmoid((radius.view(-1, 1, 1) - dist) / softness.view(-1, 1, 1))


def trajectory_kernels(draw: Draw, extent: Tensor, curviness: Tensor) -> Tensor:
    """Motion-blur kernels from random camera trajectories; shape (b, k, k), each sums to 1.

    A trajectory is a random walk with momentum (velocity = start direction + integrated random
    accelerations), rescaled so its longest side spans ``extent`` pixels, then splatted
    bilinearly onto the kernel grid (the time the sensor spent at each offset). Each path is
    centred on its mean position, the kernel's centre of mass: a path that turns back or
    lingers at one end would otherwise move the image as well as blur it. ``k`` (odd) is the
    smallest size that holds every path of the batch.
    """
    b, steps = extent.shape[0], 64
    device = extent.device
    # Drawn where the caller's generator lives, built on the CPU: CUDA's scatter_add_ (and
    # float cumsum) may sum in any order, and a seed must give the same kernel every time.
    theta = draw.uniform(0.0, 2 * math.pi).cpu()
    v0 = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)  # (b, 2)
    accel = draw.randn(b, steps, 2).cpu() * curviness.cpu().view(-1, 1, 1)
    extent = extent.cpu()
    velocity = v0.unsqueeze(1) + torch.cumsum(accel, dim=1) / math.sqrt(steps)
    path = torch.cumsum(velocity, dim=1)  # (b, steps, 2)
    lo, hi = path.amin(dim=1, keepdim=True), path.amax(dim=1, keepdim=True)
    span = (hi - lo).amax(dim=-1, keepdim=True).clamp(min=1e-6)
    path = (path - path.mean(dim=1, keepdim=True)) / span * extent.view(-1, 1, 1)
    # Bilinear splats reach one pixel past a position: one more on each side.
    size = 2 * math.ceil(float(path.abs().amax())) + 3
    path = path + (size - 1) / 2  # kernel pixel coordinates
    base = torch.floor(path)
    frac = path - base
    kernels = torch.zeros(b, size * size)
    for dx in (0, 1):  # bilinear splat: 4 neighbours, vectorised over batch and steps
        for dy in (0, 1):
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            ix = (base[..., 0] + dx).clamp(0, size - 1).long()
            iy = (base[..., 1] + dy).clamp(0, size - 1).long()
            kernels.scatter_add_(1, iy * size + ix, wx * wy)
    kernels = kernels.view(b, size, size)
    return (kernels / kernels.sum(dim=(1, 2), keepdim=True)).to(device)


def _pad(x: Tensor, p: int, mode: str) -> Tensor:
    if mode == "zeros":
        return F.pad(x, (p, p, p, p))
    if mode == "reflect" and p < min(x.shape[-2:]):
        return F.pad(x, (p, p, p, p), mode="reflect")
    return F.pad(x, (p, p, p, p), mode="replicate")


def filter2d(
    x: Tensor, kernels: Tensor, *, padding: str = "reflect", fft: bool | None = None
) -> Tensor:
    """Convolve each image of ``x`` (b, c, h, w) with its own kernel (b, k, k), k odd.

    A true convolution (kernel flipped), same size out; ``padding`` is "reflect" (borders
    continue the image) or "zeros" (nothing outside, as for sparse masks). ``fft`` forces the
    method; by default the FFT is used for kernels of size ``FFT_MIN_KERNEL`` and above.
    """
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    p = k // 2
    xp = _pad(x, p, padding)
    if fft is None:
        fft = k >= FFT_MIN_KERNEL
    if not fft:
        weight = torch.flip(kernels, dims=(-2, -1)).repeat_interleave(c, dim=0).unsqueeze(1)
        out = F.conv2d(xp.reshape(1, b * c, h + 2 * p, w + 2 * p), weight.to(x.dtype), groups=b * c)
        return out.view(b, c, h, w)
    hp, wp = h + 2 * p, w + 2 * p
    kpad = torch.zeros(b, hp, wp, device=x.device, dtype=x.dtype)
    kpad[:, :k, :k] = kernels
    kpad = torch.roll(kpad, shifts=(-p, -p), dims=(-2, -1))  # kernel centre at the origin
    spec = torch.fft.rfft2(xp) * torch.fft.rfft2(kpad).unsqueeze(1)
    out = torch.fft.irfft2(spec, s=(hp, wp))
    # circular wrap-around only reaches the padding, which is cropped away
    return out[..., p : p + h, p : p + w]


def smooth_field(draw: Draw, h: int, w: int, cells: int) -> Tensor:
    """A smooth random field in [0, 1], shape (b, 1, h, w): coarse noise upsampled bicubically."""
    gh = max(2, round(cells * h / max(h, w)))
    gw = max(2, round(cells * w / max(h, w)))
    coarse = draw.rand(draw.b, 1, gh, gw)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    lo = field.amin(dim=(-2, -1), keepdim=True)
    hi = field.amax(dim=(-2, -1), keepdim=True)
    return (field - lo) / (hi - lo).clamp(min=1e-6)
