"""``color_jitter``: random exposure and white balance of clean training crops, target included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anyrestore.data import build_dataset


def _grey_photos(folder: Path, n: int = 4, value: int = 120) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(folder / f"g{i}.png")


def test_jitter_changes_exposure_and_colour_of_training_targets(tmp_path: Path) -> None:
    _grey_photos(tmp_path)
    common = {"split": "train", "crop": 16, "val_fraction": 0.0, "kinds": ["clean"]}
    torch.manual_seed(0)
    ds = build_dataset("synthetic", tmp_path, color_jitter=0.3, **common)
    grey = 120 / 255
    means = torch.stack([ds[i % len(ds)]["gt"].mean(dim=(1, 2)) for i in range(24)])
    assert means.min() >= grey * np.exp(-0.45) - 1e-6 and means.max() <= grey * np.exp(0.45) + 1e-6
    assert len({round(float(m), 3) for m in means.mean(dim=1)}) > 10  # exposures vary
    assert float((means[:, 0] - means[:, 2]).abs().max()) > 0.01  # colour casts too
    item = ds[0]  # the input is degraded from the jittered target ("clean": the same image)
    assert torch.allclose(item["lq"], item["gt"], atol=0.5 / 255 + 1e-6)


def test_jitter_is_off_by_default_training_only_and_validated(tmp_path: Path) -> None:
    _grey_photos(tmp_path)
    common = {"crop": 16, "kinds": ["clean"]}
    plain = build_dataset("synthetic", tmp_path, split="train", val_fraction=0.0, **common)
    assert float(plain[0]["gt"].mean()) == pytest.approx(120 / 255)
    val = build_dataset(
        "synthetic", tmp_path, split="val", val_fraction=0.5, color_jitter=0.5, **common
    )
    assert all(float(val[i]["gt"].mean()) == pytest.approx(120 / 255) for i in range(len(val)))
    with pytest.raises(ValueError, match="color_jitter"):
        build_dataset("synthetic", tmp_path, color_jitter=2.0)
    with pytest.raises(ValueError, match="synthetic"):
        build_dataset("paired", tmp_path, color_jitter=0.1)
