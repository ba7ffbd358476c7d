"""benchmarks/bf16_gradients.py: fp32 and bf16-autocast gradients of one training step, compared."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchkit import load_script


def test_bf16_gradient_points_where_fp32_does(photos: Path, tiny_checkpoint: Path) -> None:
    """One row per kind; the CPU's bf16 training path follows fp32's gradient."""
    rows = load_script("bf16_gradients").main(
        [
            str(photos),
            "--weights",
            str(tiny_checkpoint),
            "--crop",
            "32",
            "--batch",
            "2",
            "--kinds",
            "haze,noise_25",
            "--json",
        ]
    )
    assert [r["kind"] for r in rows] == ["haze", "noise_25"]
    for r in rows:
        assert 0.9 < r["cosine"] <= 1.0, r
        assert 0.5 < r["norm_ratio"] < 2.0, r
        assert r["loss_fp32"] == pytest.approx(r["loss_bf16"], rel=0.1)


def test_too_few_photos_is_one_clear_line(photos: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(SystemExit, match="fewer than 9 photos of at least 32 px"):
        load_script("bf16_gradients").main(
            [str(photos), "--weights", str(tiny_checkpoint), "--crop", "32", "--batch", "9"]
        )
