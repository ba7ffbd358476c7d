"""The classical baseline: each restorer helps on its own kind; missing dependencies fail cleanly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("scipy")
pytest.importorskip("skimage")

from anyrestore.bench import classical  # noqa: E402
from anyrestore.bench.candidates import (  # noqa: E402
    CLASSICAL,
    IDENTITY,
    classical_candidate,
    identity_candidate,
    parse_baselines,
)
from anyrestore.bench.quality import run_quality  # noqa: E402
from anyrestore.bench.suites import SYNTHETIC_TASKS  # noqa: E402
from anyrestore.bench.synthetic import find_photos, synthetic_pairs  # noqa: E402
from anyrestore.cli.app import app  # noqa: E402
from anyrestore.errors import UsageError  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


def scene(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth colour fields with some texture; every patch has a dark channel, as photos do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack(
        [0.5 + 0.4 * np.sin(6 * xx), 0.4 + 0.3 * np.cos(5 * yy), 0.1 + 0.1 * xx * yy], axis=-1
    )
    return np.clip(img + 0.03 * rng.standard_normal((h, w, 3)), 0, 1)


def test_median_removes_thin_rain_streaks() -> None:
    clean = scene()
    rainy = clean.copy()
    rng = np.random.default_rng(1)
    for x in rng.choice(64, 10, replace=False):  # 1 px bright streaks, 8-16 px long
        y = rng.integers(0, 48)
        rainy[y : y + rng.integers(8, 16), x] = 0.95
    assert psnr(classical.restore(rainy, "rain"), clean) > psnr(rainy, clean) + 3


def test_dark_channel_prior_removes_uniform_haze() -> None:
    clean = scene()
    t = np.linspace(0.1, 0.9, 64)[:, None, None]  # far at the top, as outdoor photos are
    hazy = clean * t + np.array([0.9, 0.9, 0.92]) * (1 - t)  # I = J t + A (1 - t)
    assert psnr(classical.restore(hazy, "haze"), clean) > psnr(hazy, clean) + 5


def test_low_light_gain_undoes_a_dark_tone_curve() -> None:
    clean = scene()
    rng = np.random.default_rng(2)
    dark = np.clip(0.2 * clean**1.6 + 0.005 * rng.standard_normal(clean.shape), 0, 1)
    assert psnr(classical.restore(dark, "low_light"), clean) > psnr(dark, clean) + 5


def test_unsharp_mask_sharpens_a_slight_blur() -> None:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    clean = gaussian_filter(rng.random((64, 64, 3)), sigma=(2, 2, 0))
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    blurred = gaussian_filter(clean, sigma=(1, 1, 0))
    assert psnr(classical.restore(blurred, "blur"), clean) > psnr(blurred, clean) + 1


def test_cbm3d_denoises_with_the_true_sigma() -> None:
    pytest.importorskip("bm3d")
    clean = scene(32, 32)
    noisy = clean + np.random.default_rng(4).normal(0, 25 / 255, clean.shape)
    told = psnr(classical.restore(noisy, "noise_25"), clean)
    assert told > psnr(noisy, clean) + 3
    # on the 0-255 scale, as the degradation draws it: a wrong scale (or level) would show
    assert told > psnr(classical.denoise_bm3d(noisy, 100), clean) + 1
    assert told > psnr(classical.denoise_bm3d(noisy, 6), clean) + 1


def test_composites_are_undone_last_damage_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("dehaze", "median", "enhance_low_light"):
        monkeypatch.setattr(classical, name, lambda x, name=name: calls.append(name) or x)
    image = scene(8, 8)
    assert np.array_equal(classical.restore(image, "L+H+R"), image)
    assert calls == ["enhance_low_light", "median", "dehaze"]  # applied haze, rain, low light
    calls.clear()
    classical.restore(image, "jpeg")  # no classical restorer: left as it is
    assert calls == []


def test_baselines_parse_from_repeats_and_commas() -> None:
    assert parse_baselines(None) == ()
    assert parse_baselines("identity") == (IDENTITY,)
    assert parse_baselines("identity,classical") == (IDENTITY, CLASSICAL)
    assert parse_baselines(["classical", "identity, classical"]) == (CLASSICAL, IDENTITY)
    with pytest.raises(UsageError, match="unknown baseline 'mean'"):
        parse_baselines("identity,mean")


def test_missing_dependency_is_a_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d now raises ImportError
    with pytest.raises(UsageError, match=r"needs bm3d: pip install bm3d \(the bench extra\)$"):
        classical_candidate()


def test_cli_reports_missing_dependency_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, photos: Path
) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)
    result = CliRunner().invoke(
        app, ["bench", "--images", str(photos), "--baseline", "identity,classical"]
    )
    assert result.exit_code == 2
    assert "pip install bm3d " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # rows without noise run without it
    args = ["bench", "--images", str(photos), "--baseline", "identity,classical", "--kinds", "R"]
    assert CliRunner().invoke(app, args).exit_code == 0


def test_classical_row_per_kind_with_gain_over_the_input(
    monkeypatch: pytest.MonkeyPatch, photos: Path
) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)  # only noise needs it: not asked for here
    tasks = [t for t in SYNTHETIC_TASKS if t.kind in ("H", "R")]
    pairs = synthetic_pairs(("H", "R"), find_photos(photos), max_side=None)
    told = classical_candidate([t.data_kind for t in tasks])
    records = run_quality([identity_candidate(), told], tasks, pairs, suite="s")
    rows = {(r["model"], r["kind"]): r for r in records}
    for kind in ("H", "R", "average"):
        assert rows[(IDENTITY, kind)]["psnr_gain"] == 0.0
        r = rows[(CLASSICAL, kind)]
        assert r["psnr_gain"] == pytest.approx(r["psnr"] - rows[(IDENTITY, kind)]["psnr"])
    assert rows[(CLASSICAL, "H")]["psnr_gain"] > 0  # told "haze", it dehazes
    # Told "rain", the median ran (on these small synthetic photos it costs more detail than
    # the streaks it removes): the row is its own, not the input's.
    assert rows[(CLASSICAL, "R")]["psnr_gain"] != 0.0
