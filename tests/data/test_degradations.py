"""Degradations: seeded, batched, in range, and each changes an image the way it should."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from anyrestore.data.degradations import (
    CDD11,
    CLEAN,
    SINGLE_KINDS,
    SLIGHT_BLUR,
    add_mist,
    canonical_kind,
    degrade,
    degrade_batch,
    list_kinds,
    parse_kind,
    weather,
)
from anyrestore.data.degradations._rng import Draw
from anyrestore.data.degradations.kernels import filter2d, trajectory_kernels


def photo(b: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A stand-in photo: smooth colour regions plus sharp 8-px checker edges, in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(b, 3, 4, 4, generator=g), size=(h, w), mode="bilinear")
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = (((ys // 8) + (xs // 8)) % 2).float()
    return (0.1 + 0.5 * smooth + 0.3 * checker).clamp(0, 1)


def grad_energy(x: torch.Tensor) -> float:
    return float(
        (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    )


def dark_channel(x: torch.Tensor, patch: int = 7) -> torch.Tensor:
    return -F.max_pool2d(-x.amin(dim=1, keepdim=True), patch, stride=1, padding=patch // 2)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("kind", list_kinds())
def test_seeded_in_range_same_shape(kind: str) -> None:
    x = photo()
    y = degrade(x, kind, seed=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y, degrade(x, kind, seed=3))
    assert not torch.equal(y, degrade(x, kind, seed=4))
    assert not torch.allclose(y, x, atol=1e-3)


def test_out_of_range_and_nan_input_is_clamped_first() -> None:
    x = photo()
    wild = x.clone()
    wild[0, :2, :2] = float("nan")
    wild[1, :2, :2] = 7.0
    clamped = x.clone()
    clamped[0, :2, :2] = 0.0
    clamped[1, :2, :2] = 1.0
    for kind in ("noise_25", "L+H+S"):
        assert torch.equal(degrade(wild, kind, seed=1), degrade(clamped, kind, seed=1))


@pytest.mark.parametrize("kind", SINGLE_KINDS)
def test_each_image_of_a_batch_gets_its_own_parameters(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per-pixel randomness alone would make the outputs differ: look at the parameters too.
    drawn: list[torch.Tensor] = []
    for name in ("uniform", "log_uniform"):
        real = getattr(Draw, name)

        def spy(self: Draw, lo: float, hi: float, real: Callable = real) -> torch.Tensor:
            value = real(self, lo, hi)
            drawn.append(value)
            return value

        monkeypatch.setattr(Draw, name, spy)
    x = photo(b=1).expand(4, -1, -1, -1).contiguous()
    y = degrade(x, kind, seed=0)
    # Gaussian noise has none to draw: its sigma is the kind's (noise_15, noise_25, noise_50).
    assert drawn or kind.startswith("noise_"), f"{kind} draws no per-image parameter"
    assert all(v.shape == (4,) and len(set(v.tolist())) == 4 for v in drawn)
    assert not torch.allclose(y[0], y[1], atol=1e-3)


def test_per_image_parameters_not_just_per_pixel_randomness() -> None:
    x = torch.full((4, 3, 32, 32), 0.6)
    means = degrade(x, "low_light", seed=0).mean(dim=(1, 2, 3))
    assert float(means.max() - means.min()) > 0.02  # different darkening curves


def test_unbatched_image_and_generator_match_seed() -> None:
    x = photo(b=1)
    y = degrade(x[0], "haze+rain", seed=7)
    assert y.shape == x[0].shape
    assert torch.equal(y, degrade(x, "haze+rain", seed=7)[0])
    assert torch.equal(y, degrade(x[0], "haze+rain", generator=torch.Generator().manual_seed(7)))


def test_half_precision_input_keeps_its_dtype() -> None:
    y = degrade(photo().half(), "blur", seed=0)
    assert y.dtype == torch.float16


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_noise_has_the_requested_sigma(sigma: int) -> None:
    x = torch.full((1, 3, 128, 128), 0.5)
    y = degrade(x, f"noise_{sigma}", seed=1)
    # clipping at 0 and 1 is 2.5 sigma away at most and shaves < 1% off the std
    assert float((y - x).std()) == pytest.approx(sigma / 255, rel=0.03)
    assert abs(float((y - x).mean())) < 0.005


def test_haze_raises_the_dark_channel_and_lowers_contrast() -> None:
    x = photo(b=4)
    y = degrade(x, "haze", seed=0)
    assert float(dark_channel(y).mean()) > float(dark_channel(x).mean()) + 0.1
    assert float(y.std(dim=(1, 2, 3)).mean()) < float(x.std(dim=(1, 2, 3)).mean())


def test_haze_is_thicker_far_away_at_the_top() -> None:
    x = torch.zeros(8, 3, 64, 64)  # a black scene shows the airlight A (1 - t) directly
    y = degrade(x, "haze", seed=0)
    assert float(y[..., :16, :].mean()) > float(y[..., -16:, :].mean())


def _transmission(veil: Callable[[torch.Tensor, Draw], torch.Tensor], seed: int) -> torch.Tensor:
    """Per-pixel share of the scene light that gets through: the veil over a white scene minus
    the veil over a black one, same draw (the light is mixed in linearly)."""
    white, black = torch.ones(1, 3, 48, 48), torch.zeros(1, 3, 48, 48)
    over = [veil(x, Draw(torch.Generator().manual_seed(seed), x.device, 1)) for x in (white, black)]
    return (over[0] - over[1])[0].mean(0)


def test_mist_is_always_lighter_than_haze_and_not_a_kind() -> None:
    # The training veil that stays in the target must never be as thick as haze the model is
    # taught to remove, or the two lessons contradict each other.
    mist = [_transmission(weather.mist, s) for s in range(40)]
    haze = [_transmission(weather.haze, s) for s in range(40)]
    thinnest_mist = min(float(t.min()) for t in mist)
    assert thinnest_mist > max(float(t[:8].mean()) for t in haze)  # haze far away, at the top
    assert thinnest_mist > 0.55 and max(float(t.max()) for t in mist) < 1.0  # there, but light
    assert "mist" not in list_kinds()
    x = photo(b=1)[0]
    g = torch.Generator().manual_seed(3)
    assert torch.equal(
        add_mist(x, generator=g), add_mist(x, generator=torch.Generator().manual_seed(3))
    )


def test_low_light_darkens() -> None:
    x = photo(b=4)
    y = degrade(x, "low_light", seed=0)
    assert float(y.mean()) < 0.6 * float(x.mean())


def test_low_light_noise_depends_on_the_signal() -> None:
    x = torch.cat([torch.full((1, 3, 64, 64), 0.2), torch.full((1, 3, 64, 64), 1.0)], dim=-1)
    y = degrade(x.expand(4, -1, -1, -1), "low_light", seed=0)
    dim, bright = y[..., :64].std(dim=(1, 2, 3)), y[..., 64:].std(dim=(1, 2, 3))
    assert bool((bright > dim).all())


def test_blur_lowers_gradient_energy() -> None:
    x = photo(b=4)
    assert grad_energy(degrade(x, "blur", seed=0)) < 0.7 * grad_energy(x)


def test_slight_blur_blurs_each_photo_less_than_blur_and_is_training_only() -> None:
    x = photo(b=4)
    # one seed draws the same trajectory shape for both; slight blur's is 2-9 px, blur's 5-21
    blurred, slight = degrade(x, "blur", seed=3), degrade(x, SLIGHT_BLUR, seed=3)
    per_image = [grad_energy(t[i : i + 1]) for t in (x, slight, blurred) for i in range(4)]
    sharp, kept, lost = per_image[:4], per_image[4:8], per_image[8:]
    for i in range(4):
        assert lost[i] < kept[i] < 0.97 * sharp[i]
    assert torch.equal(degrade(x, SLIGHT_BLUR, seed=3), slight)
    for combo in ("slight_blur+noise_15", "H+slight_blur"):
        with pytest.raises(ValueError, match="cannot be combined"):
            parse_kind(combo)
    # not offered to the benchmark suites, which keep the papers' kinds
    assert SLIGHT_BLUR not in list_kinds() and SLIGHT_BLUR not in SINGLE_KINDS


def test_rain_adds_sparse_bright_streaks_and_never_darkens() -> None:
    x = photo(b=4)
    y = degrade(x, "rain", seed=0)
    assert bool((y >= x - 1e-6).all())
    assert float(y.mean()) > float(x.mean())
    streak = (y - x).amax(dim=1) > 0.2
    assert 0.002 < float(streak.float().mean()) < 0.5


def test_rain_streaks_are_elongated_along_one_direction() -> None:
    x = torch.zeros(1, 3, 96, 96)
    layer = degrade(x, "rain", seed=2)[0, 0]
    # streaks within 26 degrees of vertical: far more structure along x than along y
    dx = (layer[:, 1:] - layer[:, :-1]).abs().mean()
    dy = (layer[1:, :] - layer[:-1, :]).abs().mean()
    assert float(dx) > 1.5 * float(dy)


def test_snow_adds_sparse_bright_flakes() -> None:
    x = torch.full((4, 3, 96, 96), 0.2)
    y = degrade(x, "snow", seed=0)
    bright = y.amin(dim=1) > 0.6
    assert 0.001 < float(bright.float().mean()) < 0.3
    assert float(y.mean()) > 0.2


def test_jpeg_adds_8x8_blockiness_but_keeps_the_image() -> None:
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(
        torch.rand(2, 3, 6, 6, generator=g), size=(96, 96), mode="bicubic", align_corners=True
    )
    x = (smooth + 0.03 * torch.randn(2, 3, 96, 96, generator=g)).clamp(0, 1)
    y = degrade(x, "jpeg", seed=0)
    assert psnr(x, y) > 22
    assert not torch.equal(x, y)

    def blockiness(img: torch.Tensor) -> float:
        d = (img[..., :, 1:] - img[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # per column step
        at_edges = d[7::8].mean()
        inside = torch.cat([d[i::8] for i in range(7)]).mean()
        return float(at_edges / inside)

    assert blockiness(y) > 1.1 * blockiness(x)


def test_parse_kind_orders_composites_physically() -> None:
    assert parse_kind("noise_25+jpeg+blur+haze") == ("haze", "blur", "noise_25", "jpeg")
    assert parse_kind("rain+haze+low_light") == ("haze", "rain", "low_light")
    assert parse_kind("L+H+S") == ("haze", "snow", "low_light")
    assert parse_kind(["low_light", "H"]) == ("haze", "low_light")
    assert canonical_kind("L+H") == canonical_kind("haze+low_light") == "haze+low_light"


def test_clean_kind_is_the_photo_itself_alone_and_training_only() -> None:
    x = photo(b=3)
    assert parse_kind(CLEAN) == parse_kind([CLEAN]) == (CLEAN,)
    assert torch.equal(degrade(x, CLEAN, seed=0), x)
    y = degrade_batch(x, [CLEAN, "noise_50", CLEAN], seed=0)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2]) and not torch.equal(y[1], x[1])
    for combo in ("clean+blur", "H+clean"):
        with pytest.raises(ValueError, match="cannot be combined"):
            parse_kind(combo)
    # not a degradation a benchmark or `list_kinds` offers
    assert CLEAN not in list_kinds() and CLEAN not in SINGLE_KINDS


def test_cdd11_labels_in_table_order_and_consistent() -> None:
    assert list(CDD11) == ["L", "H", "R", "S", "L+H", "L+R", "L+S", "H+R", "H+S", "L+H+R", "L+H+S"]
    for label, composite in CDD11.items():
        assert parse_kind(label) == parse_kind(composite)


@pytest.mark.parametrize("bad", ["fog", "noise_30", "rain+rain", "noise_15+noise_50", "", "L+X"])
def test_parse_kind_rejects_with_known_names(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_kind(bad)
    if "twice" not in str(err.value) and "more than one" not in str(err.value):
        assert "low_light" in str(err.value) and "noise_15" in str(err.value)


def test_composite_applies_haze_before_rain_whatever_the_spelling() -> None:
    x = photo()
    composite = degrade(x, "rain+haze", generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    stepwise = degrade(degrade(x, "haze", generator=g), "rain", generator=g)
    assert torch.allclose(composite, stepwise)
    g = torch.Generator().manual_seed(5)
    wrong_order = degrade(degrade(x, "rain", generator=g), "haze", generator=g)
    assert not torch.allclose(composite, wrong_order)
    assert torch.equal(degrade(x, "L+H", seed=1), degrade(x, "haze+low_light", seed=1))


def test_degrade_batch_applies_each_images_kind() -> None:
    x = photo(b=4)
    kinds = ["low_light", "haze", "low_light", "noise_50"]
    y = degrade_batch(x, kinds, seed=0)
    assert torch.equal(y, degrade_batch(x, kinds, seed=0))
    assert float(y[0].mean()) < 0.6 * float(x[0].mean())
    assert float(dark_channel(y[1:2]).mean()) > float(dark_channel(x[1:2]).mean()) + 0.1
    assert float((y[3] - x[3]).std()) > 0.1
    with pytest.raises(ValueError):
        degrade_batch(x, kinds[:2])


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        degrade(torch.rand(1, 64, 64), "haze")
    with pytest.raises(ValueError):
        degrade(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "haze")
    with pytest.raises(ValueError):
        degrade(photo(), "haze", seed=1, generator=torch.Generator())


def test_fft_and_direct_convolution_agree() -> None:
    x = photo(b=2, h=40, w=36)
    draw = Draw(torch.Generator().manual_seed(0), x.device, 2)
    kernels = trajectory_kernels(draw, torch.tensor([6.0, 15.0]), torch.tensor([0.5, 1.0]))
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(2))
    assert bool((kernels >= 0).all())
    direct = filter2d(x, kernels, fft=False)
    fft = filter2d(x, kernels, fft=True)
    assert torch.allclose(direct, fft, atol=1e-5)
    delta = torch.zeros(2, 5, 5)
    delta[:, 2, 2] = 1
    assert torch.allclose(filter2d(x, delta), x, atol=1e-6)
    shift = torch.zeros(2, 5, 5)
    shift[:, 2, 3] = 1  # a true convolution moves content right
    assert torch.allclose(filter2d(x, shift, padding="zeros")[..., 1:], x[..., :-1], atol=1e-6)


def test_trajectory_kernels_span_the_requested_extent() -> None:
    draw = Draw(torch.Generator().manual_seed(1), torch.device("cpu"), 3)
    extent = torch.tensor([5.0, 11.0, 21.0])
    kernels = trajectory_kernels(draw, extent, torch.zeros(3))
    for k, e in zip(kernels, extent.tolist(), strict=True):
        ys, xs = torch.nonzero(k > 1e-4, as_tuple=True)
        span = max(int(ys.max() - ys.min()), int(xs.max() - xs.min()))
        assert math.isclose(span, e, abs_tol=2)


def test_camera_shake_blurs_the_photo_without_moving_it() -> None:
    # A curved path that lingers at one end put the kernel's mass off its centre: the blurred
    # photo sat pixels away from its clean target, a shift no restorer can know to undo.
    draw = Draw(torch.Generator().manual_seed(0), torch.device("cpu"), 400)
    kernels = trajectory_kernels(draw, torch.full((400,), 21.0), draw.uniform(0.0, 1.5))
    size = kernels.shape[-1]
    assert size % 2 == 1 and torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(400))
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    centre_x = (kernels.sum(dim=1) * grid).sum(dim=1)
    centre_y = (kernels.sum(dim=2) * grid).sum(dim=1)
    assert float(torch.hypot(centre_x, centre_y).max()) < 0.05
    # Not one path is cut by the kernel's edge.
    assert float(kernels[:, [0, -1], :].sum()) == 0 and float(kernels[:, :, [0, -1]].sum()) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_device_generators() -> None:
    x = photo().cuda()
    for kind in list_kinds():
        y = degrade(x, kind, seed=0)
        assert y.device == x.device and y.shape == x.shape
        assert torch.equal(y, degrade(x, kind, seed=0))
