"""What is not pixels: EXIF and its orientation, XMP, IPTC, text, print resolution, ICC."""

from __future__ import annotations

import dataclasses
import io
import logging
import struct

import numpy as np
import pytest
from imagekit import (
    AVIF,
    RNG,
    H,
    W,
    as_uint,
    gray_icc,
    identity_restore,
    pil_bytes,
    srgb_icc,
)
from PIL import Image, ImageOps, PngImagePlugin

from anyrestore.engine import encode_image, read_image
from anyrestore.engine.imageio import (
    ImageData,
    avif_supported,
)
from anyrestore.engine.imageio.metadata import exif_without_orientation


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
    # A file that ends inside the block: what is whole of it is kept.
    cut = IPTC[: len(IPTC) - 3]
    jpeg = _jpeg_with_app13(b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(IPTC)) + cut)
    whole = IPTC[: IPTC.rindex(b"\x1c\x02\x19")]  # all but the last keyword
    assert read_image(jpeg).iptc == whole


def _jpeg_with_app13_segments(*irbs: bytes) -> bytes:
    """A JPEG whose APP13 segments, one after the other, hold ``irbs``."""
    jpeg = pil_bytes(Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)), "JPEG")
    segments = b""
    for irb in irbs:
        body = b"Photoshop 3.0\0" + irb
        segments += b"\xff\xed" + struct.pack(">H", len(body) + 2) + body
    return jpeg[:2] + segments + jpeg[2:]


def test_iptc_that_goes_on_in_a_second_app13_segment_is_read_whole() -> None:
    # Resources outgrowing one segment (a large thumbnail, then the IPTC) go on in the next;
    # Pillow parses each segment alone, and the IPTC that spanned two was cut short.
    thumbnail = _photoshop_irb(0x040C, bytes(65_000))
    irb = thumbnail + _photoshop_irb(0x0404, IPTC)
    for at in (len(thumbnail) - 12, len(thumbnail) + 12 + 20):  # in the thumbnail, the IPTC
        assert read_image(_jpeg_with_app13_segments(irb[:at], irb[at:])).iptc == IPTC


def test_iptc_in_a_segment_of_its_own_is_read_as_pillow_reads_it() -> None:
    # A first segment ending in padding (or a size past its end) spoils the joined stream:
    # the IPTC of the next segment is then what Pillow read there. Of two, the last counts.
    newer = _iptc_record(120, "A newer caption")
    padded = _photoshop_irb(0x040C, b"old thumbnail") + bytes(4)
    jpeg = _jpeg_with_app13_segments(padded, _photoshop_irb(0x0404, IPTC))
    assert read_image(jpeg).iptc == IPTC
    twice = _photoshop_irb(0x0404, IPTC) + _photoshop_irb(0x0404, newer)
    assert read_image(_jpeg_with_app13(twice)).iptc == newer


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


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_a_gray_photo_with_its_own_profile_keeps_its_tones_in_any_format(fmt: str) -> None:
    """WebP has no gray mode: the gray values go through their profile into sRGB (an RGB
    file cannot carry a Gray profile); PNG keeps the gray values and the profile."""
    linear = gray_icc(1.0)
    im = Image.fromarray(np.full((H, W), 128, dtype=np.uint8), "L")
    img = read_image(pil_bytes(im, "PNG", icc_profile=linear))
    out = Image.open(io.BytesIO(encode_image(identity_restore(img), fmt, quality=100)))
    if fmt == "PNG":
        assert out.mode == "L" and out.info.get("icc_profile") == linear
        assert abs(int(np.asarray(out).mean()) - 128) <= 1
    else:  # linear 0.5 is sRGB 0.735
        assert out.mode == "RGB" and "icc_profile" not in out.info
        assert abs(float(np.asarray(out).mean()) - 188) <= 2


def test_exif_without_orientation_never_raises() -> None:
    for cut in (b"II*\0", b"Exif\0\0MM\0*\0\0", b"Exif\0\0", b"not exif at all"):
        assert exif_without_orientation(cut) is None
    short = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 3)  # three entries promised
    assert exif_without_orientation(short) == short


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
