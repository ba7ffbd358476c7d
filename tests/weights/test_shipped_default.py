"""The embedded default on the shipped sample photos, which it never trained on.

A guard for whoever replaces the shipped weights: the new file must still restore the common
damage clearly, and must leave a photo that needs nothing nearly as it is. The margins are well
below what the shipped file measures (README, "Shipped weights"), so only a real regression fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import anyrestore
from anyrestore.bench.synthetic import load_photo, seed_for
from anyrestore.data.degradations import degrade
from anyrestore.engine import Restorer
from anyrestore.metrics import psnr
from anyrestore.weights import load_weights

SAMPLES = Path(anyrestore.__file__).parent / "assets" / "samples"
PHOTOS = ("chelsea.jpg", "coffee.jpg")  # kept out of the training corpus


@pytest.fixture(scope="module")
def restore():
    """What `anyrestore fix` runs: the embedded default, whole image (no tiling), CPU fp32."""
    return Restorer(load_weights(None, offline=True).model, "cpu", "fp32", tile=0).restore_tensor


@pytest.mark.parametrize("name", PHOTOS)
def test_default_restores_noise_low_light_and_haze(restore, name: str) -> None:
    clean = load_photo(SAMPLES / name, 256).unsqueeze(0)
    for kind, least in (("noise_25", 5.0), ("low_light", 4.0), ("haze", 4.0)):
        damaged = degrade(clean, kind, seed=seed_for(name, kind))
        gain = float(psnr(restore(damaged), clean) - psnr(damaged, clean))
        assert gain > least, f"{name} {kind}: {gain:+.2f} dB"


@pytest.mark.parametrize("name", PHOTOS)
def test_default_leaves_a_clean_photo_nearly_alone(restore, name: str) -> None:
    clean = load_photo(SAMPLES / name, 256).unsqueeze(0)
    out = restore(clean)
    # stage 10, never shown a clean input, gave coffee 28.9 dB
    assert float(psnr(out, clean)) > 30.0
    assert (out.mean() - clean.mean()).abs() < 0.02  # no overall darkening or brightening
