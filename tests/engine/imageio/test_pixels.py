"""Pixels in and out: alpha, grayscale, palette and CMYK."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from imagekit import (
    RNG,
    H,
    Identity,
    W,
    as_uint,
    identity_restore,
    pil_bytes,
)
from PIL import Image

from anyrestore.engine import Restorer, encode_image, read_image


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_alpha_passes_through_untouched(fmt: str) -> None:
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    params = {"lossless": True} if fmt == "WEBP" else {}
    img = read_image(pil_bytes(Image.fromarray(rgba, "RGBA"), fmt, **params))
    assert img.alpha is not None and np.array_equal(img.alpha, rgba[..., 3])
    restored = Restorer(_Darken(), "cpu", tile=0).restore_image(img)
    out = np.asarray(Image.open(io.BytesIO(encode_image(restored, fmt))))
    assert out.shape == (H, W, 4)
    assert np.array_equal(out[..., 3], rgba[..., 3])
    if fmt != "WEBP":  # RGB really went through the model
        assert np.array_equal(out[..., :3], as_uint(restored.rgb))


class _Darken(Identity):
    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor:
        return x * 0.5


@pytest.mark.parametrize("fmt", ["JPEG", "BMP"])
def test_output_without_alpha_drops_it_with_a_warning(
    caplog: pytest.LogCaptureFixture, fmt: str
) -> None:
    # BMP wrote it where every reader takes it for padding, without a word.
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    img = read_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    with caplog.at_level(logging.WARNING, logger="anyrestore"):
        out = Image.open(io.BytesIO(encode_image(img, fmt)))
    assert out.mode == "RGB" and f"{fmt} keeps no alpha channel" in caplog.text


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_grayscale_stays_grayscale(fmt: str) -> None:
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    img = read_image(pil_bytes(Image.fromarray(gray, "L"), fmt))
    assert img.grayscale and img.rgb.shape == (H, W, 3)
    assert np.array_equal(img.rgb[..., 0], img.rgb[..., 2])
    out = Image.open(io.BytesIO(encode_image(identity_restore(img), fmt)))
    assert out.mode == "L"
    if fmt != "JPEG":
        assert np.array_equal(np.asarray(out), gray)


def test_palette_images_are_converted_with_their_transparency() -> None:
    rgb = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    pal = rgb.quantize(16)
    img = read_image(pil_bytes(pal, "PNG"))
    assert not img.grayscale and img.alpha is None
    assert np.array_equal(as_uint(img.rgb), np.asarray(pal.convert("RGB")))
    pal.info["transparency"] = 0
    with_alpha = read_image(pil_bytes(pal, "PNG", transparency=0))
    assert with_alpha.alpha is not None
    assert np.array_equal(with_alpha.alpha, np.asarray(pal.convert("RGBA"))[..., 3])
    assert Image.open(io.BytesIO(encode_image(with_alpha, "PNG"))).mode == "RGBA"


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    cmyk = Image.fromarray(RNG.integers(0, 256, (H, W, 4), dtype=np.uint8), "CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=95)
    img = read_image(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert img.rgb.shape == (H, W, 3) and img.format == "JPEG"
    assert np.array_equal(as_uint(img.rgb), expected)
    assert Image.open(io.BytesIO(encode_image(img, "JPEG"))).mode == "RGB"
