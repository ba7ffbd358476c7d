"""PSNR, SSIM and MS-SSIM as pure tensor functions, shared by training and the bench.

PSNR and SSIM follow scikit-image's ``peak_signal_noise_ratio`` and
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
(Wang et al. 2004) on full RGB images, each channel scored separately and averaged, as the
papers' tables are (the AnyIR authors' code uses scikit-image's default 7x7 uniform window
instead, usually a few thousandths different: docs/bench.md). MS-SSIM is Wang et al. 2003, used as a training loss.
Inputs are float tensors ``(b, c, h, w)`` or ``(c, h, w)``; results are one value per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mse", "psnr", "ssim", "ms_ssim", "rgb_to_y"]

_K1, _K2 = 0.01, 0.03
#: SSIM's Gaussian window (Wang et al. 2004): the smallest side an image can be scored at.
SSIM_WINDOW = 11
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _as_batch(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.dim() == 3:
        return pred.unsqueeze(0), target.unsqueeze(0)
    if pred.dim() != 4:
        raise ValueError(f"expected (b, c, h, w) or (c, h, w), got {tuple(pred.shape)}")
    return pred, target


def _floating(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.double()


def _data_range(data_range: float | None, x: Tensor) -> float:
    """``data_range``, or the one the images' type implies as in scikit-image: 1 for floats,
    the type's range for integers (255 for 8-bit)."""
    if data_range is not None:
        return data_range
    if x.is_floating_point():
        return 1.0
    info = torch.iinfo(x.dtype)
    return float(info.max - min(info.min, 0))


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per image, over all channels and pixels (PSNR's and the loss's core)."""
    pred, target = _as_batch(_floating(pred), _floating(target))
    return (pred - target).pow(2).flatten(1).mean(dim=1)


def psnr(pred: Tensor, target: Tensor, data_range: float | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, over all channels and pixels.

    ``data_range`` defaults to 1 for float images and 255 for 8-bit ones. Identical images
    give ``inf``, as in scikit-image.
    """
    peak = _data_range(data_range, target)
    return 10.0 * torch.log10(peak**2 / mse(pred, target))


def _gaussian_kernel(
    win_size: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    # scipy.ndimage.gaussian_filter's taps (radius (win_size-1)//2), normalised to sum 1.
    r = (win_size - 1) // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _filter(x: Tensor, kernel: Tensor) -> Tensor:
    """Separable depthwise Gaussian filter, 'valid' region only.

    The valid region is exactly what scikit-image keeps after cropping (win_size-1)//2
    pixels from each side, so no border mode is needed.
    """
    c = x.shape[1]
    n = kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, n, 1).expand(c, 1, n, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, n).expand(c, 1, 1, n), groups=c)


def _ssim_maps(
    pred: Tensor, target: Tensor, data_range: float, win_size: int, sigma: float
) -> tuple[Tensor, Tensor]:
    if win_size % 2 == 0 or win_size < 3:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
    h, w = pred.shape[-2:]
    if min(h, w) < win_size:
        raise ValueError(f"image {h}x{w} is smaller than the SSIM window ({win_size})")
    kernel = _gaussian_kernel(win_size, sigma, pred.dtype, pred.device)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    ux, uy = _filter(pred, kernel), _filter(target, kernel)
    uxx = _filter(pred * pred, kernel)
    uyy = _filter(target * target, kernel)
    uxy = _filter(pred * target, kernel)
    # Population covariance (use_sample_covariance=False).
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    cs_map = (2 * vxy + c2) / (vx + vy + c2)
    ssim_map = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs_map
    return ssim_map, cs_map


def ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float | None = None,
    win_size: int = SSIM_WINDOW,
    sigma: float = 1.5,
    return_cs: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Structural similarity per image: Gaussian-weighted, per channel, then averaged.

    ``data_range`` as for :func:`psnr`. With ``return_cs`` also returns the
    contrast-structure term (used by MS-SSIM).
    """
    peak = _data_range(data_range, target)
    pred, target = _as_batch(_floating(pred), _floating(target))
    ssim_map, cs_map = _ssim_maps(pred, target, peak, win_size, sigma)
    # Every channel has the same number of pixels, so the flat mean is the mean of channel means.
    s = ssim_map.flatten(1).mean(dim=1)
    if return_cs:
        return s, cs_map.flatten(1).mean(dim=1)
    return s


def ms_ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float | None = None,
    weights: Sequence[float] = _MS_SSIM_WEIGHTS,
    win_size: int = SSIM_WINDOW,
    sigma: float = 1.5,
) -> Tensor:
    """Multi-scale SSIM per image, differentiable (for the training loss).

    Images too small for all scales use fewer (the weights of the kept scales are
    renormalised); images smaller than the window use a smaller odd window.
    """
    data_range = _data_range(data_range, target)
    pred, target = _as_batch(_floating(pred), _floating(target))
    h, w = pred.shape[-2:]
    side = min(h, w)
    if side < 3:
        raise ValueError(f"image {h}x{w} is too small for MS-SSIM")
    if side < win_size:
        win_size = side if side % 2 else side - 1
        sigma = sigma * win_size / 11
    # Keep scale i only while the image at that scale still holds one full window.
    levels = 1
    while levels < len(weights) and side // 2**levels >= win_size:
        levels += 1
    wts = torch.tensor(weights[:levels], dtype=pred.dtype, device=pred.device)
    wts = wts / wts.sum()

    values = []
    for i in range(levels):
        s, cs = ssim(pred, target, data_range, win_size, sigma, return_cs=True)
        # Clamp so fractional powers of tiny/negative values stay finite (and differentiable).
        values.append((s if i == levels - 1 else cs).clamp(min=1e-6))
        if i < levels - 1:
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
    stacked = torch.stack(values, dim=1)  # (b, levels)
    return torch.prod(stacked ** wts.unsqueeze(0), dim=1)


def rgb_to_y(x: Tensor) -> Tensor:
    """Luma Y of ITU-R BT.601 with studio swing, as MATLAB's ``rgb2ycbcr`` computes it.

    Input RGB in [0, 1] of shape (..., 3, h, w); output (..., 1, h, w) in [16/255, 235/255].
    This is the "Y channel" of restoration papers (and basicsr); score it with data_range=1.
    """
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, h, w), got {tuple(x.shape)}")
    x = _floating(x)
    r, g, b = x.unbind(dim=-3)
    y = (65.481 * r + 128.553 * g + 24.966 * b + 16.0) / 255.0
    return y.unsqueeze(-3)
