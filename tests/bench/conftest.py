"""Tiny clean photos for the bench tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_photo(path: Path, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth gradient with texture, saved as 8-bit; returns the saved uint8 array."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1)
    img = np.clip(0.15 + 0.7 * base + 0.08 * rng.standard_normal((h, w, 3)), 0, 1)
    array = (img * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_photo(folder / "a.png", seed=1)
    write_photo(folder / "b.jpg", h=36, w=44, seed=2)
    write_photo(folder / "b_degraded.png", seed=3)  # skipped: not a clean photo
    (folder / "notes.txt").write_text("not an image")
    return folder
