"""Metrics agree with scikit-image, the reference the papers' numbers come from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from anyrestore.metrics import ms_ssim, mse, psnr, rgb_to_y, ssim


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=2,
        data_range=1.0,
    )


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 1)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.3])
def test_real_images_match_skimage(name: str, sigma: float) -> None:
    clean = getattr(data, name)()[::2, ::2].astype(np.float64) / 255.0
    noisy = _noisy(clean, sigma, seed=1).astype(np.float32).astype(np.float64)
    clean = clean.astype(np.float32).astype(np.float64)
    p = psnr(_to_tensor(noisy), _to_tensor(clean))
    s = ssim(_to_tensor(noisy), _to_tensor(clean))
    assert p.shape == (1,) and s.shape == (1,)
    assert p.item() == pytest.approx(
        peak_signal_noise_ratio(clean, noisy, data_range=1.0), abs=0.01
    )
    assert s.item() == pytest.approx(_sk_ssim(clean, noisy), abs=1e-3)


def test_random_batch_matches_skimage_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 37, 45, generator=gen)
    pred = (target + 0.2 * torch.randn(3, 3, 37, 45, generator=gen)).clamp(0, 1)
    p, s = psnr(pred, target), ssim(pred, target)
    assert p.shape == (3,) and s.shape == (3,)
    for i in range(3):
        a = target[i].permute(1, 2, 0).double().numpy()
        b = pred[i].permute(1, 2, 0).double().numpy()
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=0.01)
        assert s[i].item() == pytest.approx(_sk_ssim(a, b), abs=1e-3)


def test_mse_is_per_image_and_takes_8_bit_images() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (2, 3, 9, 11), generator=gen, dtype=torch.uint8)
    b = torch.randint(0, 256, (2, 3, 9, 11), generator=gen, dtype=torch.uint8)
    want = [((a[i].double() - b[i].double()) ** 2).mean().item() for i in range(2)]
    assert mse(a, b).tolist() == pytest.approx(want)  # no uint8 wrap-around
    assert mse(a[0], b[0]).tolist() == pytest.approx(want[:1])


def test_data_range_255_matches_skimage() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (32, 40, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    s = ssim(_to_tensor(b).double(), _to_tensor(a).double(), data_range=255.0).item()
    ref = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=2,
        data_range=255.0,
    )
    assert s == pytest.approx(ref, abs=1e-3)
    p = psnr(_to_tensor(b), _to_tensor(a), data_range=255.0).item()
    assert p == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255.0), abs=0.01)
    # 8-bit images score on their own range, as scikit-image infers it (not 1: +48 dB).
    a8, b8 = _to_tensor(a).to(torch.uint8), _to_tensor(np.round(b)).to(torch.uint8)
    want = peak_signal_noise_ratio(a.astype(np.uint8), np.round(b).astype(np.uint8))
    assert psnr(b8, a8).item() == pytest.approx(want, abs=0.01)
    assert ssim(b8, a8).item() == pytest.approx(ssim(b8.double(), a8.double(), 255.0).item())


def test_identical_images() -> None:
    x = torch.rand(2, 3, 24, 24)
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 9))
    with pytest.raises(ValueError):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))  # smaller than the window


def test_ms_ssim_differentiable_and_ordered() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 180, 170, generator=gen)
    noise = torch.randn(2, 3, 180, 170, generator=gen)
    light = (target + 0.05 * noise).clamp(0, 1).requires_grad_(True)
    heavy = (target + 0.3 * noise).clamp(0, 1)
    v = ms_ssim(light, target)
    assert v.shape == (2,)
    assert (v > ms_ssim(heavy, target)).all()
    (1 - v).mean().backward()
    assert light.grad is not None and torch.isfinite(light.grad).all()
    assert light.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(7, 9), (16, 16), (40, 30)])
def test_ms_ssim_small_images_use_fewer_scales(size: tuple[int, int]) -> None:
    target = torch.rand(1, 3, *size)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    v = ms_ssim(pred, target)
    assert torch.isfinite(v).all() and 0 < v.item() < 1
    v.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_ms_ssim_single_scale_is_ssim() -> None:
    # 15x15: only one scale fits an 11x11 window, so MS-SSIM is plain SSIM.
    target = torch.rand(1, 3, 15, 15, dtype=torch.float64)
    pred = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    assert ms_ssim(pred, target).item() == pytest.approx(ssim(pred, target).item(), abs=1e-9)


def test_rgb_to_y_matches_skimage_ycbcr() -> None:
    img = data.coffee()[::4, ::4].astype(np.float64) / 255.0
    y = rgb_to_y(_to_tensor(img).double())
    assert y.shape == (1, img.shape[0], img.shape[1])
    ref = color.rgb2ycbcr(img)[..., 0] / 255.0
    assert np.allclose(y[0].numpy(), ref, atol=1e-6)
    assert rgb_to_y(torch.zeros(2, 3, 4, 4)).min().item() == pytest.approx(16 / 255)
    assert rgb_to_y(torch.ones(2, 3, 4, 4)).max().item() == pytest.approx(235 / 255)
