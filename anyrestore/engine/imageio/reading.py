"""Decoding a photo from a path or bytes, refusing what cannot be read faithfully.

The pixel limit is checked on the size the header declares, before any pixel is decoded.
Pillow decodes 16-bit RGB(A) to 8 bits (it has no 16-bit RGB mode), so such a file is decoded
twice, once with Pillow's high-byte unpacker and once with its low-byte twin (same bit width,
so the PNG/TIFF unfiltering is identical), and the bytes are recombined; planar 16-bit TIFFs
are read one plane at a time. A file whose pixel data ends early is an error unless the caller
allows it (Pillow would fill the rest with black).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from anyrestore.engine.imageio.formats import (
    AVIF_MISSING,
    FORMATS,
    MAX_PIXELS_ENV,
    READ_ONLY_FORMATS,
    ImageData,
    avif_supported,
    max_pixels_from_env,
)
from anyrestore.engine.imageio.metadata import (
    ORIENTATION,
    orientation_and_exif,
    pillow_turns,
    read_dpi,
    read_iptc,
    read_text,
    read_xmp,
)
from anyrestore.engine.imageio.pixels import (
    apply_orientation,
    eight_bit_target,
    key_colour_alpha,
    to_mode,
    unpremultiply,
)
from anyrestore.errors import InputError, UsageError, first_line
from anyrestore.files import UNREADABLE_PHOTOS

log = logging.getLogger("anyrestore")

_pillow_limit_lock = threading.RLock()  # a decode reopens its file under it


@contextmanager
def _pillow_settings(*, lift_limit: bool = False, truncated: bool | None = None) -> Iterator[None]:
    """Pillow's settings as a read needs them: its pixel limit lifted (it would pre-empt ours
    and warn; we check the header's size ourselves), truncated data accepted or not.

    They are process-wide, so another thread's ``Image.open`` meanwhile sees them too (an app
    that reads uploads elsewhere would lose its bomb check): the limit is lifted only around
    what checks it (opening a file, loading a TIFF), only a value that differs is set, and
    it is put back at once, leaving values that other code set alone.
    """
    wanted = {}
    if lift_limit:
        wanted[(Image, "MAX_IMAGE_PIXELS")] = None
    if truncated is not None:
        wanted[(ImageFile, "LOAD_TRUNCATED_IMAGES")] = truncated
    with _pillow_limit_lock:
        saved = {}
        for (module, name), value in wanted.items():
            if getattr(module, name) != value:
                saved[(module, name)] = getattr(module, name)
                setattr(module, name, value)
        try:
            yield
        finally:
            for (module, name), value in saved.items():
                setattr(module, name, value)


def _pixels(n: float) -> str:
    """A pixel count for messages: megapixels when large, the plain count when small."""
    if n >= 100_000:
        return f"{n / 1e6:.1f} MP"
    return f"{int(n):,} pixel{'s' if n != 1 else ''}"


def read_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int | None = None,
    name: str | None = None,
    allow_truncated: bool = False,
) -> ImageData:
    """Decode a file path or encoded bytes; InputError for anything unreadable or too large.

    The pixel limit is checked on the size the header declares, before any pixel is decoded.
    A file whose data ends early is refused unless ``allow_truncated``.
    """
    if max_pixels is not None and max_pixels <= 0:
        raise UsageError(f"max_pixels must be positive, got {max_pixels}")
    limit = max_pixels if max_pixels is not None else max_pixels_from_env()
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    label = name or ("<stdin>" if is_bytes else str(source))

    def opener() -> Image.Image:
        fp: Any = io.BytesIO(bytes(source)) if is_bytes else source  # type: ignore[arg-type]
        with _pillow_settings(lift_limit=True):
            return Image.open(fp)

    raw = UNREADABLE_PHOTOS.get(Path(label).suffix.lower()) == "camera RAW"
    if not avif_supported() and _unreadable_photo(_head(source, is_bytes)) == "AVIF":
        # Pillow's AVIF module may load with a libavif that has no AV1 decoder: it then
        # opens the file and fails in libavif's words, not ours.
        raise _convert_first(label, "AVIF")
    try:
        im = opener()
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory, not an image") from None
    except UnidentifiedImageError:
        head = _head(source, is_bytes)
        if photo := _unreadable_photo(head) or ("camera RAW" if raw else None):
            raise _convert_first(label, photo) from None
        kind = _signature(head)
        if kind:  # the right magic bytes, a header Pillow cannot parse
            raise InputError(f"{label}: corrupt {kind} (its header is damaged)") from None
        raise InputError(
            f"{label}: not an image file (supported: PNG, JPEG, WebP, AVIF, TIFF, BMP)"
        ) from None
    except PermissionError as exc:
        raise InputError(f"{label}: cannot open ({exc.strerror})") from None
    except OSError as exc:
        raise InputError(
            f"{label}: cannot read image ({exc.strerror or first_line(exc)})"
        ) from None
    except Exception as exc:  # Pillow's format probes raise many types on hostile headers
        raise InputError(f"{label}: cannot read image ({first_line(exc)})") from None
    with im:
        if raw or _is_raw_tiff(im):  # most are TIFFs to Pillow, which reads their small preview
            raise _convert_first(label, "camera RAW")
        fmt = "JPEG" if im.format == "MPO" else im.format  # camera JPEGs often open as MPO
        if fmt not in FORMATS + READ_ONLY_FORMATS:
            raise InputError(
                f"{label}: unsupported image format {im.format} (supported: PNG, JPEG, WebP, AVIF, TIFF, BMP)"
            )
        frames = 1 if im.format == "MPO" else getattr(im, "n_frames", 1)  # MPO: + a preview
        if frames > 1 and getattr(im, "is_animated", False) and fmt != "TIFF":
            raise InputError(
                f"{label}: an animation of {frames} frames; anyrestore restores still images "
                "(extract the frame to restore first)"
            )
        if frames > 1:
            log.warning("%s holds %d pages; only the first is restored", label, frames)
        w, h = im.size
        if w * h > limit:
            raise InputError(
                f"{label}: {w}x{h} is {_pixels(w * h)}, over the limit of {_pixels(limit)} "
                f"(raise the limit with max_pixels or {MAX_PIXELS_ENV})"
            )
        try:
            short = False
            if fmt == "PNG":
                try:
                    _check_png_complete(source if is_bytes else None, source, im)  # type: ignore[arg-type]
                except InputError:
                    if not allow_truncated:
                        raise
                    short = True
            if not short:
                try:
                    with _pillow_settings(lift_limit=fmt == "TIFF", truncated=False):
                        return _decode(im, fmt, opener)
                except Exception as exc:
                    if not (allow_truncated and _truncated(exc)):
                        raise
            # Asked to go on: say so, then decode again with the missing rows filled in.
            log.warning("%s is truncated; restoring what is there", label)
            with (
                _pillow_settings(lift_limit=fmt == "TIFF", truncated=True),
                opener() as again,
            ):
                return _decode(again, fmt, opener)
        except InputError as exc:
            raise InputError(f"{label}: {exc}") from None
        except MemoryError:
            raise InputError(f"{label}: not enough memory to decode {w}x{h}") from None
        except Exception as exc:  # Pillow raises many types on corrupt data
            hint = "; allow_truncated restores what is there" if _truncated(exc) else ""
            raise InputError(
                f"{label}: corrupt or truncated image ({first_line(exc)}){hint}"
            ) from None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
)


#: The brands (bytes 8-12) of the ISO media files that hold photos Pillow cannot read.
_MEDIA_BRANDS = {
    **dict.fromkeys((b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"), "HEIC"),
    **dict.fromkeys((b"mif1", b"msf1"), "HEIF"),
    **dict.fromkeys((b"avif", b"avis"), "AVIF"),
    b"crx ": "camera RAW",  # Canon CR3
}


def _head(source: Any, is_bytes: bool) -> bytes:
    """A file's first 64 bytes (fewer for a shorter or unreadable one): enough for the
    signatures and an ISO media file's brands."""
    if is_bytes:
        return bytes(source[:64])
    try:
        with open(source, "rb") as f:
            return f.read(64)
    except OSError:
        return b""


def _media_kind(head: bytes) -> str | None:
    """What an ISO media file's ``ftyp`` box says it holds (``_MEDIA_BRANDS``), or None. An
    AVIF may name the generic HEIF brand first and AVIF among its compatible brands."""
    if head[4:8] != b"ftyp":
        return None
    kind = _MEDIA_BRANDS.get(head[8:12])
    if kind == "HEIF":
        size = int.from_bytes(head[:4], "big")
        compatible = head[16 : min(size, len(head))]
        brands = {compatible[i : i + 4] for i in range(0, len(compatible) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            kind = "AVIF"
    return kind


def _signature(head: bytes) -> str | None:
    """The format a file's first bytes announce (WebP: RIFF....WEBP), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if _media_kind(head) == "AVIF" and avif_supported():
        return "AVIF"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _unreadable_photo(head: bytes) -> str | None:
    """The name of a photo format Pillow cannot read that a file's first bytes announce."""
    if head[4:8] == b"ftyp":
        kind = _media_kind(head)
        return None if kind == "AVIF" and avif_supported() else kind
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "JPEG XL"
    return None


def _is_raw_tiff(im: Image.Image) -> bool:
    """A camera RAW file whatever its name (piped in, a DNG renamed .tif): a TIFF whose first
    image carries a DNG version, or is marked a reduced-resolution copy of another (the
    preview RAW formats put first)."""
    if im.format != "TIFF":
        return False
    tags = getattr(im, "tag_v2", {})
    subfile = tags.get(254, 0)  # NewSubfileType, bit 0: a reduced-resolution image
    return 50706 in tags or (isinstance(subfile, int) and bool(subfile & 1))


def _convert_first(label: str, kind: str) -> InputError:
    """The error for a photo in a format anyrestore cannot read: what to turn it into."""
    if kind == "camera RAW":
        return InputError(
            f"{label}: a camera RAW file; develop it to a 16-bit TIFF (or PNG, JPEG) with a raw "
            "converter first, then restore that"
        )
    if kind == "AVIF":
        return InputError(f"{label}: {AVIF_MISSING}; convert it to TIFF, PNG or JPEG first")
    return InputError(f"{label}: {kind} is not supported; convert it to TIFF, PNG or JPEG first")


def _truncated(exc: BaseException) -> bool:
    return "truncated" in str(exc)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def _png_expected_bytes(w: int, h: int, depth: int, color_type: int, interlaced: bool) -> int:
    """The length of a PNG's decompressed image data (filter byte plus packed row, per row)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color_type, 1)

    def rows(width: int, height: int) -> int:
        return (
            0 if width == 0 or height == 0 else height * (1 + (width * channels * depth + 7) // 8)
        )

    if not interlaced:
        return rows(w, h)
    return sum(
        rows(max(0, (w - x0 + dx - 1) // dx), max(0, (h - y0 + dy - 1) // dy))
        for x0, y0, dx, dy in _ADAM7
    )


def _check_png_complete(data: bytes | None, path: Any, im: Image.Image) -> None:
    """Refuse a PNG whose compressed data ends before its last row (Pillow pads with black)."""
    fp: Any = io.BytesIO(bytes(data)) if data is not None else open(path, "rb")  # noqa: SIM115
    with fp:
        fp.read(8)
        inflate = zlib.decompressobj()
        got, expected = 0, None
        while True:
            head = fp.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", fp.read(13))
                expected = _png_expected_bytes(w, h, depth, color, interlace == 1)
                fp.seek(4, 1)
                continue
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                fp.seek(length + 4, 1)
                continue
            chunk = fp.read(length)
            fp.seek(4, 1)
            while chunk and not inflate.eof and (expected is None or got < expected):
                got += len(inflate.decompress(chunk, 1 << 20))
                chunk = inflate.unconsumed_tail
            if expected is not None and got >= expected:
                return
    if expected is None or got >= expected:
        return
    share = got / expected if expected else 0.0
    raise InputError(
        f"corrupt or truncated image: its pixel data ends after {share:.0%} of the rows; "
        "allow_truncated restores what is there"
    )


# A tile is (codec, extents, offset, args): a named tuple from Pillow 11, a plain one before.
def _rawmode(tile: Any) -> str:
    args = tile[3]
    return str(args[0] if isinstance(args, tuple) else args)


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = tile[3]
    fields = (*tile[:3], (rawmode, *args[1:]) if isinstance(args, tuple) else rawmode)
    return fields if type(tile) is tuple else type(tile)(*fields)


_NATIVE = ";16L" if sys.byteorder == "little" else ";16B"
_LOW_BYTE_TWIN = {";16B": ";16L", ";16L": ";16B", ";16N": ";16B" if _NATIVE == ";16L" else ";16L"}


def _sixteen_bit_layout(im: Image.Image) -> str | None:
    """How to read a 16-bit file Pillow would reduce to 8 bits: 'rgb' (RGB, RGBA, or RGB
    with an extra sample, RGBX), 'premultiplied' (RGBA with associated alpha) or 'la';
    None for any other file."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    modes = {_rawmode(t) for t in im.tile}
    if len(modes) != 1:
        return None
    raw = modes.pop()
    if raw == "LA;16B":
        return "la"
    head, depth = raw[:-4], raw[-4:]
    if depth not in _LOW_BYTE_TWIN:
        return None
    if head == im.mode or (head, im.mode) == ("RGBX", "RGB"):
        return "rgb"
    if (head, im.mode) == ("RGBa", "RGBA"):
        return "premultiplied"
    return None


def _planar_sixteen_bit(im: Image.Image, fmt: str) -> bool:
    """A 16-bit RGB(A) TIFF stored plane by plane, which Pillow would read as scrambled bytes."""
    if fmt != "TIFF" or im.mode not in ("RGB", "RGBA"):
        return False
    tags = getattr(im, "tag_v2", {})
    bits = tags.get(258) or (8,)
    return tags.get(284) == 2 and max(bits) == 16


def _read_planes(im: Image.Image, opener: Callable[[], Image.Image]) -> tuple[np.ndarray, bool]:
    """(h, w, c) uint16 from a planar TIFF: each band's tiles decoded as one 16-bit image;
    and whether loading already applied the EXIF orientation (Pillow does for TIFFs)."""
    big = getattr(getattr(im, "tag_v2", None), "_endian", "<") == ">"
    rawmode = "I;16B" if big else "I;16"
    bands, turned = [], False
    for band in im.mode:
        tiles = [t for t in im.tile if _rawmode(t) == band]
        if not tiles:
            raise InputError(f"planar TIFF without a {band} plane")
        with opener() as plane:
            plane._mode = "I;16"  # noqa: SLF001 - Pillow has no public way to set it
            plane.tile = [_with_rawmode(t, rawmode) for t in tiles]
            before = plane.getexif().get(ORIENTATION, 1)
            plane.load()
            turned = before != plane.getexif().get(ORIENTATION, 1)
            bands.append(np.asarray(plane, dtype=np.uint16))
    return np.stack(bands, axis=-1), turned


def _decode(im: Image.Image, fmt: str, opener: Callable[[], Image.Image]) -> ImageData:
    if _planar_sixteen_bit(im, fmt):
        orientation, exif = orientation_and_exif(im, fmt)
        pixels, turned = _read_planes(im, opener)
        if not turned:
            pixels = apply_orientation(pixels, orientation)
        alpha = np.ascontiguousarray(pixels[..., 3]) if im.mode == "RGBA" else None
        rgb = pixels[..., :3].astype(np.float32) * np.float32(1.0 / 65535)
        icc = im.info.get("icc_profile") or None
        dpi = read_dpi(im, orientation)  # read before Pillow turned the planes
        xmp = read_xmp(im, orientation)
        return ImageData(rgb, alpha, 16, False, icc, exif, fmt, dpi, xmp, read_iptc(im, fmt))
    deep_ppm = _deep_ppm(im, fmt)
    if deep_ppm is not None:
        return ImageData(deep_ppm.astype(np.float32) / np.float32(65535), None, 16, format=fmt)
    layout = _sixteen_bit_layout(im)
    if layout == "la":
        # 16-bit gray+alpha: the RGBA unpacker has the same width and yields all four bytes.
        im.tile = [_with_rawmode(t, "RGBA") for t in im.tile]
    elif layout == "premultiplied":
        # Read as straight alpha (byte by byte, as the twin below), divided out in 16 bits.
        im.tile = [_with_rawmode(t, "RGBA" + _rawmode(t)[-4:]) for t in im.tile]
    turned_by_pillow = pillow_turns(im, fmt)
    im.load()
    orientation, exif = orientation_and_exif(im, fmt)
    icc = im.info.get("icc_profile") or None
    dpi = read_dpi(im, orientation if orientation != 1 else turned_by_pillow)
    bit_depth = 8
    if layout == "la":
        b = np.asarray(im).astype(np.uint16)
        pixels = np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=-1)
        has_alpha, gray, bit_depth = True, True, 16
    elif layout in ("rgb", "premultiplied"):
        high = np.asarray(im).astype(np.uint16)
        with opener() as twin:
            head = "RGBA" if layout == "premultiplied" else _rawmode(twin.tile[0])[:-4]
            twin.tile = [  # the high pass's unpacker (straight RGBA for premultiplied)
                _with_rawmode(t, head + _LOW_BYTE_TWIN[_rawmode(t)[-4:]]) for t in twin.tile
            ]
            twin.load()
            low = np.asarray(twin)
        pixels = (high << 8) | low
        if layout == "premultiplied":
            pixels = unpremultiply(pixels)
        has_alpha, gray, bit_depth = im.mode == "RGBA", False, 16
        if not has_alpha:
            pixels, has_alpha = key_colour_alpha(pixels, im.info.get("transparency"))
    elif im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            # signed or 32-bit integers (scientific TIFFs): no 16-bit scale to read them on
            raise InputError(
                f"integer image with values from {values.min()} to {values.max()}; only "
                "0-65535 can be read: convert it to unsigned 16 bit"
            )
        pixels = values.astype(np.uint16)[..., None]
        pixels, has_alpha = key_colour_alpha(pixels, im.info.get("transparency"))
        gray, bit_depth = True, 16
    elif im.mode == "F":
        raise InputError("floating-point images are not supported; convert to 8 or 16 bit")
    else:
        target, icc = eight_bit_target(im, icc)
        converted = to_mode(im, target, icc)
        if im.mode == "CMYK":
            icc = None  # now sRGB
        pixels = np.asarray(converted)
        has_alpha, gray = target in ("LA", "RGBA"), target in ("L", "LA")
    pixels = apply_orientation(pixels, orientation)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    alpha = np.ascontiguousarray(pixels[..., -1]) if has_alpha else None
    color = pixels[..., :-1] if has_alpha else pixels
    rgb = color.astype(np.float32)
    rgb *= np.float32(1.0 / (65535 if bit_depth == 16 else 255))
    if gray:
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    xmp = read_xmp(im, orientation if orientation != 1 else int(turned_by_pillow))
    iptc, text = read_iptc(im, fmt), read_text(im, fmt)
    return ImageData(rgb, alpha, bit_depth, gray, icc, exif, fmt, dpi, xmp, iptc, text)


def _deep_ppm(im: Image.Image, fmt: str) -> np.ndarray | None:
    """(h, w, 3) uint16 of a colour PPM with more than 8 bits a sample, binary (``dcraw -6``,
    netpbm) or plain text (P3), both of which Pillow scales to 8; None for any other file (or
    one cut short or not numbers, which Pillow's reader then reports)."""
    if fmt != "PPM" or im.mode != "RGB" or len(im.tile) != 1:
        return None
    codec, args = im.tile[0][0], im.tile[0][3]
    if codec not in ("ppm", "ppm_plain"):
        return None
    maxval = int(args[1]) if isinstance(args, tuple) and len(args) > 1 else 255
    if not 255 < maxval <= 65535:
        return None
    w, h = im.size
    count = w * h * 3
    im.fp.seek(im.tile[0][2])
    if codec == "ppm":
        data = im.fp.read(count * 2)
        if len(data) < count * 2:
            return None
        values = np.frombuffer(data, dtype=">u2").astype(np.float64)
    else:
        # Whitespace-separated decimal numbers; a plain file has no comments past its header.
        words = im.fp.read().split()[:count]
        if len(words) < count or not all(word.isdigit() for word in words):
            return None
        values = np.array([int(word) for word in words], dtype=np.float64)
    values = values.reshape(h, w, 3)
    return np.round(np.minimum(values, maxval) * (65535 / maxval)).astype(np.uint16)
