"""Reading: pixel limits, broken and unsupported files, what to convert a photo to."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from imagekit import (
    RNG,
    H,
    W,
    pil_bytes,
    png16_reference,
)
from PIL import Image

from anyrestore.engine import read_image
from anyrestore.engine.imageio import (
    reading,
)
from anyrestore.errors import InputError, UsageError


def test_decompression_bomb_limit_from_argument_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = pil_bytes(Image.new("RGB", (W, H)), "PNG")
    with pytest.raises(InputError, match=r"2,240 pixels, over the limit of 1,000 pixels"):
        read_image(data, max_pixels=1000)
    with pytest.raises(InputError, match=r"is 2,240 pixels, over the limit of 1 pixel"):
        read_image(data, max_pixels=1)
    monkeypatch.setenv("ANYRESTORE_MAX_PIXELS", "2000")
    with pytest.raises(InputError, match="ANYRESTORE_MAX_PIXELS"):
        read_image(data)
    monkeypatch.setenv("ANYRESTORE_MAX_PIXELS", "3000")
    assert read_image(data).width == W
    monkeypatch.setenv("ANYRESTORE_MAX_PIXELS", "lots")
    with pytest.raises(UsageError):
        read_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_pillow_keeps_its_own_settings_while_an_image_decodes(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # They are process-wide: an app's other threads opening uploads meanwhile must keep
    # Pillow's bomb check, and a value the app set must still be there afterwards.
    data = pil_bytes(Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)), fmt)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 12_345_678)  # the app's own choice
    seen = []
    real = reading.orientation_and_exif

    def spy(im, fmt):  # type: ignore[no-untyped-def]
        seen.append(Image.MAX_IMAGE_PIXELS)  # called while the pixels are decoded
        return real(im, fmt)

    monkeypatch.setattr(reading, "orientation_and_exif", spy)
    assert read_image(data).width == W
    assert seen == [None if fmt == "TIFF" else 12_345_678]  # TIFF checks it while loading
    assert Image.MAX_IMAGE_PIXELS == 12_345_678


def test_bomb_limit_is_checked_before_decoding() -> None:
    # A header claiming 30000 x 30000 pixels and no pixel data at all.
    header = png16_reference(np.zeros((1, 1, 3), np.uint16))
    big = bytearray(header)
    big[16:24] = struct.pack(">II", 30000, 30000)
    big[29:33] = struct.pack(">I", zlib.crc32(bytes(big[12:29])))
    with pytest.raises(InputError, match="900.0 MP"):
        read_image(bytes(big))


def test_corrupt_missing_and_unsupported_inputs(tmp_path: Path) -> None:
    good = pil_bytes(Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(good[: len(good) // 2])
    with pytest.raises(InputError, match="not an image file"):
        read_image(b"hello, not an image")
    with pytest.raises(InputError, match="unsupported image format GIF"):
        read_image(pil_bytes(Image.new("RGB", (8, 8)), "GIF"))
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "head,kind",
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),  # an iPhone photo
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01", "camera RAW"),  # Canon CR3
    ],
)
def test_photos_in_formats_it_cannot_read_say_what_to_convert_to(head: bytes, kind: str) -> None:
    # "not an image file" for a phone's own photo reads as a broken file.
    with pytest.raises(
        InputError, match=f"^IMG_1.x: (a )?{kind}.*(convert|develop) it to"
    ) as caught:
        read_image(head + bytes(64), name="IMG_1.x")
    assert "\n" not in str(caught.value)


def test_a_camera_raw_file_is_refused_not_read_as_its_preview(tmp_path: Path) -> None:
    # DNG, NEF, ARW and most other RAW files are TIFFs whose first image is a small preview:
    # Pillow reads that, and the tool restored a thumbnail as if it were the photo.
    preview = tmp_path / "DSC_0001.NEF"
    Image.new("RGB", (160, 120)).save(preview, format="TIFF")
    with pytest.raises(InputError, match="DSC_0001.NEF: a camera RAW file; develop it"):
        read_image(preview)
    with pytest.raises(InputError, match="a camera RAW file"):
        read_image(preview.read_bytes(), name="photo.dng")
    assert read_image(preview.read_bytes(), name="photo.tif").rgb.shape == (120, 160, 3)
    # Piped in or renamed, it is told by its tags: a DNG version, or a first image marked
    # as a reduced-resolution copy (the preview RAW formats put first).
    for tags in ({50706: b"\x01\x04\x00\x00"}, {254: 1}):
        marked = tmp_path / "marked.tif"
        Image.new("RGB", (160, 120)).save(marked, format="TIFF", tiffinfo=tags)
        with pytest.raises(InputError, match="<stdin>: a camera RAW file"):
            read_image(marked.read_bytes(), name="<stdin>")


def test_bad_pixel_limits_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pil_bytes(Image.new("RGB", (W, H)), "PNG")
    for bad in (0, -1):
        with pytest.raises(UsageError, match="max_pixels must be positive"):
            read_image(data, max_pixels=bad)
    monkeypatch.setenv("ANYRESTORE_MAX_PIXELS", "1e3")  # as --max-pixels, which reads it too
    with pytest.raises(UsageError, match="whole number"):
        read_image(data)
