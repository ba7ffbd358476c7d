"""Image I/O round trips (orientation, ICC, alpha, 16 bit, gray, palette, CMYK) and error paths."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from anyrestore.engine import Restorer, encode_image, read_image, write_image
from anyrestore.engine.imageio import (
    ImageData,
    atomic_write,
    avif_supported,
    check_encodable,
    format_for_path,
    formats,
    parse_format,
    reading,
)
from anyrestore.engine.imageio.metadata import exif_without_orientation
from anyrestore.errors import InputError, UsageError
from anyrestore.models.base import RestorationModel

H, W = 40, 56
RNG = np.random.default_rng(0)
NO_AVIF = pytest.mark.skipif(not avif_supported(), reason="this Pillow has no AVIF")
AVIF = pytest.param("AVIF", marks=NO_AVIF)


class Identity(RestorationModel):
    """Returns its input, so a round trip through the engine must be lossless."""

    arch = "test_identity"
    pad_multiple = 8

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor:
        return x


def identity_restore(img: ImageData) -> ImageData:
    return Restorer(Identity(), "cpu", tile=0).restore_image(img)


def pil_bytes(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def as_uint(rgb: np.ndarray, maxval: int = 255) -> np.ndarray:
    return np.clip(rgb * maxval + 0.5, 0, maxval).astype(np.uint16 if maxval > 255 else np.uint8)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# -- independent 16-bit PNG helpers (filter 0 writer, filter 0/1 reader) -------------------


def png16_reference(pixels: np.ndarray) -> bytes:
    h, w, c = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def decode_png16(data: bytes) -> np.ndarray:
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    w, h, depth, color_type = header[:4]
    assert depth == 16
    c = {0: 1, 4: 2, 2: 3, 6: 4}[color_type]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * c * 2)
    out = rows[:, 1:].copy()
    for y in range(h):
        if rows[y, 0] == 1:  # Sub: running sum per byte lane
            out[y] = (np.cumsum(out[y].reshape(w, c * 2).astype(np.uint32), axis=0) % 256).reshape(
                -1
            )
        else:
            assert rows[y, 0] == 0
    return out.view(">u2").reshape(h, w, c).astype(np.uint16)


# -- orientation, metadata -----------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_and_dropped_from_output(orientation: int) -> None:
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    data = pil_bytes(im, "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    img = read_image(data)
    assert np.array_equal(as_uint(img.rgb), expected)
    out = Image.open(io.BytesIO(encode_image(identity_restore(img), "JPEG")))
    assert out.size == (expected.shape[1], expected.shape[0])
    assert out.getexif().get(0x0112, 1) == 1 and out.getexif()[0x010F] == "TestCam"


def _camera_exif() -> bytes:
    """A camera's EXIF: make and copyright, exposure, ISO and date, a GPS position."""
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    exif[0x010F], exif[0x8298], exif[0x0112] = "TestCam", "(c) A. Photographer", 6
    exif[0x8769] = {0x829A: IFDRational(1, 200), 0x8827: 400, 0x9003: "2024:05:01 10:00:00"}
    exif[0x8825] = {1: "N", 2: (IFDRational(52), IFDRational(31), IFDRational(0))}
    return exif.tobytes()


def _says_what_the_camera_did(data: bytes) -> bool:
    exif = Image.open(io.BytesIO(data)).getexif()
    settings, gps = exif.get_ifd(0x8769), exif.get_ifd(0x8825)
    return (
        exif.get(0x010F) == "TestCam"
        and exif.get(0x8298) == "(c) A. Photographer"
        and exif.get(0x0112, 1) == 1  # the orientation is applied, not carried
        and float(settings.get(0x829A, 0)) == 1 / 200
        and settings.get(0x8827) == 400
        and settings.get(0x9003) == "2024:05:01 10:00:00"
        and gps.get(1) == "N"
        and tuple(map(float, gps.get(2, ()))) == (52.0, 31.0, 0.0)
    )


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    b'syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:tiff="http:/'
    b'/ns.adobe.com/tiff/1.0/" xmp:Rating="5" tiff:Orientation="6"><dc:subject>Br\xc3\xbccke'
    b"</dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def _with_xmp(fmt: str) -> bytes:
    """A photo shot sideways whose XMP (a Lightroom export's) rates it and names its subject."""
    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    extra: dict[str, object] = {"xmp": XMP}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        extra = {"pnginfo": info}
    elif fmt == "TIFF":  # Pillow 11.1 writes tiffinfo alone when given exif too
        return pil_bytes(im, fmt, tiffinfo={700: XMP, 0x0112: 6})
    return pil_bytes(im, fmt, exif=exif.tobytes(), **extra)


@pytest.mark.parametrize("source", ["JPEG", "PNG", "WEBP", AVIF, "TIFF"])
def test_xmp_ratings_and_keywords_are_carried_upright(source: str) -> None:
    # XMP was dropped: a photographer's ratings, keywords and captions were lost.
    img = read_image(_with_xmp(source))
    assert img.rgb.shape == (W, H, 3)  # turned upright on the way in
    for fmt, depth in [
        ("JPEG", 8),
        ("PNG", 8),
        ("WEBP", 8),
        ("TIFF", 8),
        ("PNG", 16),
        ("TIFF", 16),
        *([("AVIF", 8)] if avif_supported() else []),
    ]:
        out = Image.open(io.BytesIO(encode_image(dataclasses.replace(img, bit_depth=depth), fmt)))
        xmp = out.info.get("xmp", b"")
        assert b'xmp:Rating="5"' in xmp and "Brücke".encode() in xmp, (fmt, depth)
        assert b"Orientation" not in xmp, (fmt, depth)  # a viewer reading it would turn it again


def test_xmp_too_long_for_jpeg_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    img = dataclasses.replace(read_image(_with_xmp("PNG")), xmp=b"<x>" + b" " * 70_000 + b"</x>")
    out = Image.open(io.BytesIO(encode_image(img, "JPEG")))
    assert "xmp" not in out.info and "XMP" in caplog.text


def _iptc_record(dataset: int, value: str) -> bytes:
    data = value.encode("utf-8")
    return b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(data)) + data


#: What a picture desk's IPTC holds: caption, byline, copyright, two keywords.
IPTC = b"".join(
    _iptc_record(dataset, value)
    for dataset, value in [
        (120, "Die Brücke at dawn"),
        (80, "Jane Müller"),
        (116, "© 2024 Jane Müller"),
        (25, "bridge"),
        (25, "fog"),
    ]
)


def _photoshop_irb(code: int, data: bytes) -> bytes:
    return b"8BIM" + struct.pack(">HHI", code, 0, len(data)) + data + b"\0" * (len(data) & 1)


def _jpeg_with_app13(irb: bytes) -> bytes:
    """A JPEG whose APP13 segment holds the Photoshop resources ``irb``."""
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    segment = b"Photoshop 3.0\0" + irb
    jpeg = pil_bytes(im, "JPEG")
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:]


def _jpeg_with_iptc() -> bytes:
    """A JPEG whose APP13 holds the IPTC and a thumbnail resource (of the damaged photo)."""
    return _jpeg_with_app13(_photoshop_irb(0x040C, b"old thumbnail") + _photoshop_irb(0x0404, IPTC))


def _tiff_with_long_iptc() -> bytes:
    """A TIFF whose IPTC tag is typed LONG, as Photoshop writes it."""
    padded = IPTC + b"\0" * (-len(IPTC) % 4)
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    data = pil_bytes(im, "TIFF", tiffinfo={33723: padded})  # Pillow types it UNDEFINED
    entry = struct.pack("<HHI", 33723, 7, len(padded))
    assert data.count(entry) == 1
    return data.replace(entry, struct.pack("<HHI", 33723, 4, len(padded) // 4))


@pytest.mark.parametrize("source", ["JPEG", "TIFF"])
def test_iptc_captions_and_keywords_are_carried_to_jpeg_and_tiff(source: str) -> None:
    # IPTC (the caption, byline and copyright a picture desk reads) was dropped from every output.
    from PIL import IptcImagePlugin

    img = read_image(_jpeg_with_iptc() if source == "JPEG" else _tiff_with_long_iptc())
    assert img.iptc == IPTC  # without the padding of a LONG-typed tag
    for fmt, depth in [("JPEG", 8), ("TIFF", 8), ("TIFF", 16)]:
        data = encode_image(dataclasses.replace(img, bit_depth=depth), fmt)
        out = Image.open(io.BytesIO(data))
        fields = IptcImagePlugin.getiptcinfo(out) or {}
        assert fields[(2, 120)] == "Die Brücke at dawn".encode(), (source, fmt, depth)
        assert fields[(2, 116)] == "© 2024 Jane Müller".encode(), (source, fmt, depth)
        assert fields[(2, 25)] == [b"bridge", b"fog"], (source, fmt, depth)
        assert read_image(data).iptc == img.iptc, (source, fmt, depth)  # byte for byte
        assert b"old thumbnail" not in data
        out.load()  # and the file is still a whole image


def test_iptc_too_long_for_jpeg_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    img = dataclasses.replace(
        read_image(_jpeg_with_iptc()), iptc=_iptc_record(120, "x" * 40_000) * 2
    )
    out = Image.open(io.BytesIO(encode_image(img, "JPEG")))
    out.load()
    assert "photoshop" not in out.info and "IPTC" in caplog.text


@pytest.mark.parametrize(("size", "kept"), [(65_505, True), (65_506, True), (65_507, False)])
def test_iptc_as_long_as_one_jpeg_segment_holds_is_kept_and_longer_dropped(
    size: int, kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # An odd length one byte under the limit is padded to it: the segment's length overflowed.
    first = 32_748
    iptc = _iptc_record(120, "a" * first) + _iptc_record(116, "b" * (size - first - 10))
    assert len(iptc) == size
    img = dataclasses.replace(read_image(_jpeg_with_iptc()), iptc=iptc)
    data = encode_image(img, "JPEG")
    assert (read_image(data).iptc == iptc) is kept
    assert ("IPTC" in caplog.text) is not kept


def test_iptc_stored_byte_swapped_is_read_back_in_order() -> None:
    # Some writers swap each four bytes of a LONG-typed tag: the block then starts 00 00 02 1c.
    padded = IPTC + b"\0" * (-len(IPTC) % 4)
    swapped = b"".join(padded[i : i + 4][::-1] for i in range(0, len(padded), 4))
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert read_image(pil_bytes(im, "TIFF", tiffinfo={33723: swapped})).iptc == IPTC


def test_iptc_cut_short_is_carried_to_its_last_whole_record() -> None:
    # A block that went on in a second APP13 segment: Pillow reads the first part alone.
    cut = IPTC[: len(IPTC) - 3]
    jpeg = _jpeg_with_app13(b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(IPTC)) + cut)
    whole = IPTC[: IPTC.rindex(b"\x1c\x02\x19")]  # all but the last keyword
    assert read_image(jpeg).iptc == whole


def test_every_kind_of_jpeg_metadata_lands_in_one_readable_file() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    img = ImageData(
        RNG.random((H, W, 3), dtype=np.float32),
        icc_profile=srgb_icc(),
        exif=exif.tobytes(),
        xmp=XMP,
        iptc=IPTC,
        text=(("Comment", "first light"),),
        dpi=(300.0, 300.0),
    )
    from PIL import IptcImagePlugin

    data = encode_image(img, "JPEG")
    out = Image.open(io.BytesIO(data))
    out.load()
    assert out.getexif()[0x010F] == "Camera maker" and out.info["icc_profile"] == srgb_icc()
    assert out.info["xmp"] == XMP and out.info["comment"] == b"first light"
    assert IptcImagePlugin.getiptcinfo(out)[(2, 80)] == "Jane Müller".encode()
    assert out.info["dpi"] == pytest.approx((300, 300))
    assert data.index(b"\xff\xdb") > data.index(b"Photoshop 3.0")  # before the tables
    assert data.count(b"http://ns.adobe.com/xap/1.0/\0") == 1
    assert data.index(b"Exif\0\0") < data.index(b"http://ns.adobe.com/xap/1.0/\0")


def test_a_jpeg_comment_that_is_not_utf8_is_kept_as_it_was() -> None:
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, "JPEG", comment=b"\xa9 2024 J\xfcrgen"))  # latin-1
    assert Image.open(io.BytesIO(encode_image(img, "JPEG"))).info["comment"] == (
        b"\xa9 2024 J\xfcrgen"
    )
    png = Image.open(io.BytesIO(encode_image(img, "PNG")))
    assert png.text == {"Comment": "© 2024 Jürgen"}  # type: ignore[attr-defined]


def test_a_comment_mixing_utf8_and_windows_bytes_reads_as_both_in_a_png() -> None:
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, "JPEG", comment="Café ".encode() + b"\x93dawn\x94"))
    png = Image.open(io.BytesIO(encode_image(img, "PNG")))
    assert png.text == {"Comment": "Café \u201cdawn\u201d"}  # type: ignore[attr-defined]


def test_png_text_and_jpeg_comments_are_carried() -> None:
    # A PNG's title, author and description (and a JPEG's comment) were dropped from outputs.
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "Fog over the river")
    info.add_itxt("Author", "Jürgen 山田")
    info.add_text("Description", "Scanned from a 1962 print", zip=True)
    info.add_text("Comment", "restored for the family album")
    info.add_text("Raw profile type exif", "\nexif\n  4\n4d4d002a\n")  # ImageMagick's copy
    info.add_text("Raw profile type iptc", "\niptc\n  5\n1c02780000\n")
    info.add_text("exif", "4d4d002a")  # what Pillow reads as the EXIF, orientation and all
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, "PNG", pnginfo=info))
    expected = {
        "Title": "Fog over the river",
        "Author": "Jürgen 山田",
        "Description": "Scanned from a 1962 print",
        "Comment": "restored for the family album",
        "Raw profile type iptc": "\niptc\n  5\n1c02780000\n",
    }
    for depth in (8, 16):
        out = Image.open(io.BytesIO(encode_image(dataclasses.replace(img, bit_depth=depth), "PNG")))
        assert out.text == expected, depth  # type: ignore[attr-defined]
    jpeg = Image.open(io.BytesIO(encode_image(img, "JPEG")))
    assert jpeg.info["comment"] == b"restored for the family album"
    back = Image.open(io.BytesIO(encode_image(read_image(encode_image(img, "JPEG")), "PNG")))
    assert back.text == {"Comment": "restored for the family album"}  # type: ignore[attr-defined]


def _hand_made_exif(kind: int, thumbnail: bool = False) -> bytes:
    """EXIF whose orientation (6) is stored as ``kind`` (3 SHORT, 4 LONG, ...), little-endian,
    with an IFD1 (a thumbnail's tags) after IFD0 when asked."""
    value = struct.pack({3: "<H", 4: "<I", 8: "<h", 9: "<i"}[kind], 6).ljust(4, b"\0")
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, kind, 1) + value
    ifd1 = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<HH", 6, 0)
    next_ifd = 8 + len(ifd0) + 4 if thumbnail else 0
    body = ifd0 + struct.pack("<I", next_ifd) + (ifd1 + struct.pack("<I", 0) if thumbnail else b"")
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + body


@pytest.mark.parametrize("kind", [3, 4, 8, 9])
def test_an_orientation_of_any_integer_type_is_applied_once(kind: int) -> None:
    # Stored as LONG, it was applied to the pixels and still written out: turned twice.
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, "PNG", exif=_hand_made_exif(kind)))
    assert img.rgb.shape == (W, H, 3)
    for fmt in ("JPEG", "PNG", "WEBP", *(("AVIF",) if avif_supported() else ())):
        assert Image.open(io.BytesIO(encode_image(img, fmt))).getexif().get(0x0112, 1) == 1


def test_the_exif_thumbnail_of_the_damaged_photo_is_not_carried() -> None:
    # IFD1 holds a thumbnail of the photo as it came in (damaged, sideways), which file
    # browsers show in place of the restored one.
    from PIL import ExifTags

    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    data = pil_bytes(im, "PNG", exif=_hand_made_exif(3, thumbnail=True))
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.IFD1)  # it has one
    out = Image.open(io.BytesIO(encode_image(read_image(data), "JPEG")))
    assert out.getexif().get_ifd(ExifTags.IFD.IFD1) == {}


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_camera_settings_text_that_is_not_ascii_stays_text(fmt: str) -> None:
    # Held as bytes, a lens or owner name became BYTE data, not text, in TIFF outputs and in
    # the EXIF carried from a TIFF input.
    texts = {0xA430: "J\u00fcrgen".encode(), 0xA434: "EF 70\u2013200mm".encode()}  # owner, lens
    sub_at = 8 + 2 + 12 + 4  # IFD0: one entry, the EXIF IFD's offset
    values_at = sub_at + 2 + 12 * len(texts) + 4
    entries, values = b"", b""
    for tag, text in texts.items():  # ASCII (type 2), NUL-ended, stored after the IFD
        entries += struct.pack("<HHII", tag, 2, len(text) + 1, values_at + len(values))
        values += text + b"\0"
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, sub_at) + bytes(4)
    sub = struct.pack("<H", len(texts)) + entries + bytes(4)
    raw = b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd0 + sub + values
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, "JPEG", exif=raw))
    img = read_image(encode_image(img, "TIFF"))  # through a TIFF, in and out
    settings = Image.open(io.BytesIO(encode_image(img, fmt))).getexif().get_ifd(0x8769)
    for tag in (0xA434, 0xA430):
        assert isinstance(settings[tag], str), settings
    assert {tag: settings[tag].encode("latin-1") for tag in texts} == texts


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", AVIF, "TIFF"])
def test_exif_text_that_is_not_ascii_survives(fmt: str) -> None:
    # Serialized again by Pillow, "© 2024 Jane Müller" came out as "?? 2024 Jane M??ller".
    exif = Image.Exif()
    exif[0x8298], exif[0x0112] = "© 2024 Jane Müller".encode(), 6
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    raw = Image.open(io.BytesIO(pil_bytes(im, "JPEG", exif=exif.tobytes()))).info["exif"]
    img = read_image(pil_bytes(im, "JPEG", exif=raw))
    out = Image.open(io.BytesIO(encode_image(img, fmt)))
    copyright = out.getexif()[0x8298]
    assert copyright.encode("latin-1").decode("utf-8") == "© 2024 Jane Müller"
    if fmt == "AVIF":  # upright: no orientation, which Pillow would make rotation boxes of
        assert 0x0112 not in out.getexif()
    elif fmt != "TIFF":  # the EXIF itself, byte for byte, but for its orientation (now 1)
        order = "<" if raw[6:8] == b"II" else ">"
        at = raw.index(struct.pack(order + "HHIH", 0x0112, 3, 1, 6))
        upright = raw[: at + 8] + struct.pack(order + "H", 1) + raw[at + 10 :]
        assert out.info["exif"].removeprefix(b"Exif\0\0") == upright.removeprefix(b"Exif\0\0")


@pytest.mark.parametrize("depth", [8, 16])
def test_a_tiff_carries_the_camera_exif_in_and_out(depth: int) -> None:
    # A TIFF's EXIF was never read (its tags are mostly layout) and TIFF output wrote none, so
    # a Lightroom TIFF or a JPEG restored to TIFF lost its camera settings, date and place.
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = dataclasses.replace(
        read_image(pil_bytes(im, "JPEG", exif=_camera_exif())), bit_depth=depth
    )
    tiff = encode_image(identity_restore(img), "TIFF")
    assert _says_what_the_camera_did(tiff)
    back = read_image(tiff)
    assert back.bit_depth == depth and back.rgb.shape == (W, H, 3)  # turned once, on the way in
    assert np.array_equal(as_uint(back.rgb), as_uint(img.rgb))
    for fmt in ("JPEG", "PNG", "TIFF"):
        assert _says_what_the_camera_did(encode_image(back, fmt)), fmt


@pytest.mark.parametrize(
    ("fmt", "depth"), [("PNG", 8), ("JPEG", 8), ("TIFF", 8), ("BMP", 8), ("PNG", 16), ("TIFF", 16)]
)
def test_print_resolution_is_carried_to_the_output(fmt: str, depth: int) -> None:
    # A 600 dpi scan came back with none: printed, it changed size.
    img = read_image(pil_bytes(Image.new("RGB", (W, H)), fmt, dpi=(600, 300)))
    img = dataclasses.replace(img, bit_depth=depth)  # our own 16-bit encoders too
    assert img.dpi is not None and np.allclose(img.dpi, (600, 300), atol=0.01)
    for out_fmt in ("PNG", "JPEG", "TIFF", "BMP"):
        out = Image.open(io.BytesIO(encode_image(identity_restore(img), out_fmt)))
        dpi = [float(v) for v in out.info["dpi"]]  # Pillow before 11.2: IFDRationals
        assert np.allclose(dpi, (600, 300), atol=0.01), (out_fmt, out.info)


def test_print_resolution_turns_with_the_photo() -> None:
    im = Image.new("RGB", (W, H))
    exif = im.getexif()
    exif[0x0112] = 6  # shot sideways: x and y swap places
    img = read_image(pil_bytes(im, "JPEG", dpi=(600, 300), exif=exif))
    assert img.dpi == (300.0, 600.0) and (img.width, img.height) == (H, W)
    # A TIFF is turned by Pillow as it loads, chunky or plane by plane.
    tifffile = pytest.importorskip("tifffile")
    pixels = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    for planes, source in (("contig", pixels), ("separate", np.moveaxis(pixels, -1, 0))):
        buf = io.BytesIO()
        tifffile.imwrite(
            buf,
            source,
            photometric="rgb",
            planarconfig=planes,
            resolution=(600, 300),
            resolutionunit=2,
            extratags=[(274, 3, 1, 6, True)],
        )
        img = read_image(buf.getvalue())
        assert img.dpi == (300.0, 600.0) and (img.width, img.height) == (H, W), planes


@pytest.mark.parametrize("dpi", [1e9, 1e-6])
def test_an_absurd_print_resolution_is_dropped_not_written(dpi: float) -> None:
    # 1e9 dpi made the PNG and BMP writers overflow (an internal error), JPEG write nonsense.
    tifffile = pytest.importorskip("tifffile")
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((H, W, 3), np.uint8), resolution=(dpi, dpi), resolutionunit=2)
    img = read_image(buf.getvalue())
    assert img.dpi is None
    for fmt in ("PNG", "JPEG", "BMP", "TIFF"):
        assert Image.open(io.BytesIO(encode_image(img, fmt))).size == (W, H)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", AVIF, "TIFF"])
def test_icc_profile_is_carried_to_the_output(fmt: str) -> None:
    icc = srgb_icc()
    im = Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = read_image(pil_bytes(im, fmt, icc_profile=icc))
    assert img.icc_profile == icc
    out = Image.open(io.BytesIO(encode_image(identity_restore(img), fmt)))
    assert out.info.get("icc_profile") == icc


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


# -- 16 bit --------------------------------------------------------------------------------


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


# -- colour modes --------------------------------------------------------------------------


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


# -- limits and errors ---------------------------------------------------------------------


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


AVIF_HEAD = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64)


def test_avif_without_pillow_support_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow reads and writes AVIF from 11.3 (the oldest Pillow anyrestore takes has none).
    monkeypatch.setattr(reading, "avif_supported", lambda: False)
    monkeypatch.delitem(formats.EXTENSIONS, ".avif", raising=False)  # as made without AVIF
    with pytest.raises(InputError, match=r"^IMG_1.avif: .*Pillow 11.3 .*convert it to") as caught:
        read_image(AVIF_HEAD, name="IMG_1.avif")
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="cannot write AVIF: .*Pillow 11.3"):
        format_for_path("out.avif")


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


def test_exif_without_orientation_never_raises() -> None:
    for cut in (b"II*\0", b"Exif\0\0MM\0*\0\0", b"Exif\0\0", b"not exif at all"):
        assert exif_without_orientation(cut) is None
    short = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 3)  # three entries promised
    assert exif_without_orientation(short) == short


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


def test_output_formats_are_named_by_extension_or_name() -> None:
    assert format_for_path("a/b.JPEG") == "JPEG" and format_for_path("x.tif") == "TIFF"
    assert parse_format("webp") == "WEBP" and parse_format(".png") == "PNG"
    if avif_supported():
        assert format_for_path("IMG_1.AVIF") == "AVIF"
    with pytest.raises(UsageError, match="unsupported output format"):
        format_for_path("out.gif")
    with pytest.raises(UsageError, match="no file extension"):
        format_for_path("out")


# -- atomic writes -------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(UsageError, match="No space left"):
        atomic_write(target, b"new bytes " * 1000)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_atomic_write_creates_folders_and_respects_umask(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write(target, b"data")
    assert target.read_bytes() == b"data"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


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


def test_exif_too_long_for_jpeg_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription
    img = read_image(pil_bytes(Image.new("RGB", (W, H)), "PNG", exif=exif.tobytes()))
    assert img.exif is not None and len(img.exif) > 65533
    with caplog.at_level(logging.WARNING, logger="anyrestore"):
        out = Image.open(io.BytesIO(encode_image(img, "JPEG")))
    assert out.size == (W, H) and "EXIF" in caplog.text and "exif" not in out.info
    assert Image.open(io.BytesIO(encode_image(img, "PNG"))).getexif()[0x010E] == "x" * 70_000


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


def test_bad_pixel_limits_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pil_bytes(Image.new("RGB", (W, H)), "PNG")
    for bad in (0, -1):
        with pytest.raises(UsageError, match="max_pixels must be positive"):
            read_image(data, max_pixels=bad)
    monkeypatch.setenv("ANYRESTORE_MAX_PIXELS", "1e3")  # as --max-pixels, which reads it too
    with pytest.raises(UsageError, match="whole number"):
        read_image(data)
