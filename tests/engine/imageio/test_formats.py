"""The formats and their limits: names, quality, sizes, and AVIF where Pillow has it."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from imagekit import (
    AVIF,
    NO_AVIF,
    RNG,
    H,
    W,
    identity_restore,
    pil_bytes,
)
from PIL import Image

from anyrestore.engine import encode_image, read_image
from anyrestore.engine.imageio import (
    avif_supported,
    check_encodable,
    format_for_path,
    formats,
    parse_format,
    reading,
)
from anyrestore.errors import InputError, UsageError


def test_bmp_and_webp_outputs() -> None:
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    img = read_image(pil_bytes(Image.fromarray(rgb), "BMP"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(img, "BMP")))), rgb)
    gray = read_image(pil_bytes(Image.fromarray(rgb[..., 0], "L"), "PNG"))
    webp = Image.open(io.BytesIO(encode_image(gray, "WEBP")))  # WebP has no gray mode
    assert webp.mode == "RGB" and webp.size == (W, H)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", AVIF])
def test_quality_trades_size_for_fidelity(fmt: str) -> None:
    # a smooth photo-like gradient with texture, where quality shows in both size and error
    yy, xx = np.mgrid[0:96, 0:128]
    rgb = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1) % 256
    rgb = (rgb + RNG.integers(0, 24, rgb.shape)).clip(0, 255).astype(np.uint8)
    img = read_image(pil_bytes(Image.fromarray(rgb), "PNG"))
    low, default = encode_image(img, fmt, quality=30), encode_image(img, fmt)
    assert len(low) < 0.7 * len(default)

    def error(data: bytes) -> float:
        return float(np.abs(np.asarray(Image.open(io.BytesIO(data)), np.float32) - rgb).mean())

    assert error(low) > error(default)
    with pytest.raises(ValueError, match="1-100"):
        encode_image(img, fmt, quality=0)


def test_output_formats_are_named_by_extension_or_name() -> None:
    assert format_for_path("a/b.JPEG") == "JPEG" and format_for_path("x.tif") == "TIFF"
    assert parse_format("webp") == "WEBP" and parse_format(".png") == "PNG"
    if avif_supported():
        assert format_for_path("IMG_1.AVIF") == "AVIF"
    with pytest.raises(UsageError, match="unsupported output format"):
        format_for_path("out.gif")
    with pytest.raises(UsageError, match="no file extension"):
        format_for_path("out")


@pytest.mark.parametrize(
    ("fmt", "side"),
    [("JPEG", 65501), ("WEBP", 16384), pytest.param("AVIF", 32769, marks=NO_AVIF)],
)
def test_an_image_the_format_cannot_hold_is_a_usage_error(fmt: str, side: int) -> None:
    img = read_image(pil_bytes(Image.new("RGB", (side, 1)), "PNG"))
    with pytest.raises(UsageError, match=f"{fmt} holds at most {side - 1} px a side"):
        encode_image(img, fmt)
    assert Image.open(io.BytesIO(encode_image(img, "PNG"))).size == (side, 1)


@NO_AVIF
def test_an_avif_too_large_to_open_again_is_refused() -> None:
    # libavif decodes at most 16384 x 16384 pixels: a larger AVIF could be written, not read.
    with pytest.raises(UsageError, match="too large to open again"):
        check_encodable(16385, 16384, "AVIF")
    check_encodable(16384, 16384, "AVIF")


AVIF_HEAD = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64)


def test_avif_without_pillow_support_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow reads and writes AVIF from 11.3 (the oldest Pillow anyrestore takes has none).
    for module in (reading, formats):
        monkeypatch.setattr(module, "avif_supported", lambda: False)
    monkeypatch.delitem(formats.EXTENSIONS, ".avif", raising=False)  # as made without AVIF
    with pytest.raises(InputError, match=r"^IMG_1.avif: .*Pillow 11.3 .*convert it to") as caught:
        read_image(AVIF_HEAD, name="IMG_1.avif")
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="cannot write AVIF: .*Pillow 11.3"):
        format_for_path("out.avif")


@NO_AVIF
def test_an_avif_pillow_opens_without_a_decoder_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow's AVIF module loads (it opens the file) with a libavif that has no AV1 decoder:
    # the photo failed in libavif's words, as "corrupt", not with what to convert it to.
    monkeypatch.setattr(reading, "avif_supported", lambda: False)
    photo = pil_bytes(Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)), "AVIF")
    with pytest.raises(InputError, match=r"^IMG_1.avif: .*Pillow 11.3 .*convert it to"):
        read_image(photo, name="IMG_1.avif")
    with pytest.raises(InputError, match=r"^<stdin>: .*convert it to"):  # whatever its name
        read_image(photo)


def test_avif_where_pillow_only_decodes_it(avif_read_only: None) -> None:
    # A libavif built to decode only: AVIF is read, and asking to write it says why not.
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert read_image(pil_bytes(Image.fromarray(rgb), "AVIF"), name="IMG_1.avif").format == "AVIF"
    with pytest.raises(UsageError, match="^cannot write AVIF: .*no AV1 encoder"):
        format_for_path("out.avif")
    assert not formats.can_write("AVIF") and formats.can_write("PNG")


@NO_AVIF
@pytest.mark.parametrize("major", [b"avif", b"mif1"])  # AVIF may name the HEIF brand first
def test_a_damaged_avif_is_called_so(major: bytes) -> None:
    head = AVIF_HEAD.replace(b"ftypavif", b"ftyp" + major)
    with pytest.raises(InputError, match="^IMG_1.avif: corrupt AVIF"):
        read_image(head, name="IMG_1.avif")


@NO_AVIF
def test_a_rotated_avif_keeps_its_exif_text() -> None:
    # Pillow writes the turn as AVIF's rotation boxes and an EXIF without orientation, and
    # reads such a file back through its own serialization: "© Müller" became "?? M??ller".
    exif = Image.Exif()
    exif[0x8298], exif[0x0112] = "© Müller".encode(), 6
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, "AVIF", exif=exif))
    assert img.rgb.shape == (W, H, 3)  # turned upright, once
    out = Image.open(io.BytesIO(encode_image(img, "JPEG"))).getexif()
    assert out[0x8298].encode("latin-1").decode("utf-8") == "© Müller"
    assert out.get(0x0112, 1) == 1


@NO_AVIF
def test_avif_in_and_out() -> None:
    # A photo with EXIF, XMP and a graded alpha: upright, the same pixels within AVIF's loss
    # at the default quality, alpha kept, metadata carried; gray stays gray.
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    rgba = np.concatenate([rgb, (xx * 4)[..., None].astype(np.uint8)], axis=-1)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"
    data = pil_bytes(Image.fromarray(rgba, "RGBA"), "AVIF", quality=100, exif=exif.tobytes())
    img = read_image(data)
    assert img.format == "AVIF" and img.rgb.shape == (W, H, 3)  # turned upright
    assert img.alpha is not None and img.alpha.shape == (W, H)
    out = Image.open(io.BytesIO(encode_image(identity_restore(img), "AVIF")))
    assert out.format == "AVIF" and out.mode == "RGBA" and out.size == (H, W)
    assert out.getexif().get(0x0112, 1) == 1 and out.getexif()[0x010F] == "Canon"
    back = np.asarray(out, np.float32)
    upright = np.rot90(rgba, -1).astype(np.float32)
    assert np.abs(back[..., :3] - upright[..., :3]).mean() < 2
    assert np.array_equal(back[..., 3], img.alpha)  # alpha passes through untouched
    gray = read_image(pil_bytes(Image.fromarray(rgb[..., 0], "L"), "PNG"))
    assert read_image(encode_image(gray, "AVIF")).grayscale


@NO_AVIF
def test_an_avif_encoder_without_exact_alpha_still_writes_the_photo(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Exact alpha is libaom's option; an AV1 encoder without it must not cost the output.
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    img = read_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    save = Image.Image.save

    def without_the_option(self: Image.Image, fp: object, format: str, **params: object) -> None:
        if "advanced" in params:
            raise ValueError("Failed to encode image: Invalid codec-specific option")
        save(self, fp, format=format, **params)

    monkeypatch.setattr(Image.Image, "save", without_the_option)
    with caplog.at_level(logging.WARNING, logger="anyrestore"):
        out = Image.open(io.BytesIO(encode_image(img, "AVIF")))
    assert out.mode == "RGBA" and "cannot keep alpha exact" in caplog.text
