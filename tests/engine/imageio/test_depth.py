"""16-bit photos stay 16-bit: PNG, TIFF and PPM, exact round trips."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from imagekit import (
    RNG,
    H,
    W,
    as_uint,
    decode_png16,
    identity_restore,
    png16_reference,
)
from PIL import Image

from anyrestore.engine import encode_image, read_image, write_image
from anyrestore.errors import InputError


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_round_trip_is_exact(channels: int) -> None:
    pixels = RNG.integers(0, 65536, (H, W, channels), dtype=np.uint16)
    img = read_image(png16_reference(pixels))
    assert img.bit_depth == 16 and img.grayscale == (channels <= 2)
    color = pixels[..., : 3 if channels >= 3 else 1]
    assert np.array_equal(as_uint(img.rgb, 65535)[..., : color.shape[-1]], color)
    data = encode_image(identity_restore(img), "PNG")
    assert np.array_equal(decode_png16(data), pixels)  # independent decoder
    if channels >= 3:  # Pillow sees the same image, reduced to its high bytes
        high = np.asarray(Image.open(io.BytesIO(data)))
        assert np.array_equal(high, (pixels >> 8).astype(np.uint8))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_tiff_round_trip_is_exact(channels: int) -> None:
    tifffile = pytest.importorskip("tifffile")
    pixels = RNG.integers(0, 65536, (H, W, channels), dtype=np.uint16)
    buf = io.BytesIO()
    source = pixels[..., 0] if channels == 1 else pixels
    extra = {"extrasamples": [2]} if channels == 4 else {}
    tifffile.imwrite(
        buf,
        source,
        photometric="minisblack" if channels == 1 else "rgb",
        compression="zlib",
        **extra,
    )
    img = read_image(buf.getvalue())
    assert img.bit_depth == 16 and img.grayscale == (channels == 1)
    data = encode_image(identity_restore(img), "TIFF")
    back = tifffile.imread(io.BytesIO(data))
    assert back.dtype == np.uint16 and np.array_equal(back.reshape(pixels.shape), pixels)
    assert np.array_equal(read_image(data).rgb, img.rgb)  # and our own reader agrees


@pytest.mark.parametrize("plain", [False, True], ids=["P6", "P3"])
@pytest.mark.parametrize("maxval", [65535, 1023])
def test_a_16bit_ppm_stays_16bit(maxval: int, plain: bool) -> None:
    # dcraw -6 writes 16-bit PPM; Pillow scales it to 8 bits (its 16-bit PGM stayed 16-bit),
    # the binary (P6) and the plain text form (P3) alike.
    pixels = RNG.integers(0, maxval + 1, (H, W, 3), dtype=np.uint16)
    if plain:
        rows = "\n".join(" ".join(map(str, row)) for row in pixels.reshape(H, -1))
        data = f"P3\n# a comment\n{W} {H}\n{maxval}\n{rows}\n".encode()
    else:
        data = f"P6\n{W} {H}\n{maxval}\n".encode() + pixels.astype(">u2").tobytes()
    img = read_image(data)
    assert img.bit_depth == 16 and img.format == "PPM"
    assert np.allclose(img.rgb * maxval, pixels, atol=0.5 * maxval / 65535 + 1e-3)
    assert read_image(encode_image(img, "PNG")).bit_depth == 16  # and so is its output


@pytest.mark.parametrize("extra", [0, 1])  # 0: an unspecified 4th sample; 1: associated alpha
def test_16bit_tiffs_with_other_extra_samples_stay_16bit(extra: int) -> None:
    # Both were read at 8 bits, without a word.
    tifffile = pytest.importorskip("tifffile")
    pixels = RNG.integers(0, 65536, (H, W, 4), dtype=np.uint16)
    pixels[..., 3] = np.maximum(pixels[..., 3], 256)
    source = pixels.copy()
    alpha = pixels[..., 3:].astype(np.float64)
    if extra == 1:  # stored premultiplied: colour times alpha
        source[..., :3] = np.round(pixels[..., :3] * alpha / 65535).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, source, photometric="rgb", extrasamples=[extra], compression="zlib")
    img = read_image(buf.getvalue())
    assert img.bit_depth == 16
    got = np.round(img.rgb * 65535)
    if extra == 0:
        assert img.alpha is None and np.array_equal(got, pixels[..., :3])
    else:  # straight again, as exactly as the stored premultiplied values allow
        assert img.alpha is not None and np.array_equal(img.alpha, pixels[..., 3])
        assert (np.abs(got - pixels[..., :3]) <= 0.5 * 65535 / alpha + 1).all()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_planar_16bit_tiff_is_turned_by_its_orientation_once(orientation: int) -> None:
    # Pillow turns each plane as it loads it; turning the result again left a photo shot
    # upside down as it was, and one shot sideways on its other side.
    tifffile = pytest.importorskip("tifffile")
    pixels = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    tag = [(274, 3, 1, orientation, True)]
    want = {3: pixels[::-1, ::-1], 6: np.rot90(pixels, -1), 8: np.rot90(pixels, 1)}[orientation]
    for planes, source in (("contig", pixels), ("separate", np.moveaxis(pixels, -1, 0))):
        buf = io.BytesIO()
        tifffile.imwrite(buf, source, photometric="rgb", planarconfig=planes, extratags=tag)
        img = read_image(buf.getvalue())
        assert img.bit_depth == 16
        assert np.array_equal(np.round(img.rgb * 65535).astype(np.uint16), want), planes


def test_16bit_gray_png_written_by_pillow_stays_16bit(tmp_path: Path) -> None:
    gray = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    src = tmp_path / "gray16.png"
    Image.fromarray(gray).save(src)
    img = read_image(src)
    out = write_image(identity_restore(img), tmp_path / "out.png")
    assert out.read_bytes()[24] == 16  # the bit depth in the PNG header (IHDR)
    assert np.array_equal(np.asarray(Image.open(out)), gray)


def test_a_32bit_integer_tiff_is_read_in_range_or_refused() -> None:
    # Values above 65535 were clipped: a scientific TIFF came back white, without a word.
    tifffile = pytest.importorskip("tifffile")
    for top, readable in ((65535, True), (70000, False)):
        values = np.linspace(0, top, H * W).astype(np.uint32).reshape(H, W)
        buf = io.BytesIO()
        tifffile.imwrite(buf, values, photometric="minisblack")
        if readable:
            img = read_image(buf.getvalue())
            assert np.array_equal(np.round(img.rgb[..., 0] * 65535), values)
        else:
            with pytest.raises(InputError, match="integer image with values from 0 to 70000"):
                read_image(buf.getvalue())


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_png_with_a_transparent_colour_keeps_it_as_alpha(channels: int) -> None:
    pixels = RNG.integers(0, 65536, (H, W, channels), dtype=np.uint16)
    key = pixels[0, 0].copy()
    data = png16_reference(pixels)
    trns = struct.pack(f">{channels}H", *key.tolist())
    chunk = (
        struct.pack(">I", len(trns))
        + b"tRNS"
        + trns
        + struct.pack(">I", zlib.crc32(b"tRNS" + trns))
    )
    at = data.index(b"IDAT") - 4
    img = read_image(data[:at] + chunk + data[at:])
    assert img.bit_depth == 16 and img.alpha is not None
    expected = np.where(np.all(pixels == key, axis=-1), 0, 65535)
    assert np.array_equal(img.alpha, expected)
    written = decode_png16(encode_image(identity_restore(img), "PNG"))
    assert np.array_equal(written[..., -1], expected)  # the output carries it as alpha
