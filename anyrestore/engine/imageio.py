"""Reading and writing photos without losing what the model does not touch.

EXIF orientation is applied on read, the ICC profile, EXIF and alpha channel are carried to
the output, grayscale stays grayscale and 16-bit PNG/TIFF stay 16-bit. Pillow decodes 16-bit
RGB(A) to 8 bits (it has no 16-bit RGB mode), so the file is decoded twice, once with Pillow's
high-byte unpacker and once with its low-byte twin (same bit width, so the PNG/TIFF
unfiltering is identical), and the bytes are recombined; 16-bit PNG and every TIFF are
encoded here (PNG chunks / a baseline TIFF) with numpy and zlib (Pillow's TIFF writer goes
through libtiff, which cannot write a photo's EXIF and GPS IFDs). Planar 16-bit TIFFs are read one
plane at a time. A file whose pixel data ends early is an error unless the caller allows it
(Pillow would fill the rest with black). Writes are atomic (anyrestore.files).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import (
    Image,
    ImageCms,
    ImageFile,
    PngImagePlugin,
    TiffImagePlugin,
    TiffTags,
    UnidentifiedImageError,
)

from anyrestore.errors import InputError, UsageError, first_line
from anyrestore.files import IMAGE_EXTENSIONS, UNREADABLE_PHOTOS, atomic_write

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXTENSIONS",
    "FORMATS",
    "FORMAT_EXTENSION",
    "MAX_SIDE",
    "ImageData",
    "atomic_write",
    "check_encodable",
    "encode_image",
    "format_for_path",
    "parse_format",
    "read_image",
    "write_image",
]

log = logging.getLogger("anyrestore")

FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")  # read and written
READ_ONLY_FORMATS = ("PPM",)
#: The extensions of the formats anyrestore writes (a subset of files.IMAGE_EXTENSIONS).
EXTENSIONS = {ext: fmt for ext, fmt in IMAGE_EXTENSIONS.items() if fmt in FORMATS}
FORMAT_EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "ANYRESTORE_MAX_PIXELS"
JPEG_QUALITY = 95
WEBP_QUALITY = 95
#: The formats a quality setting changes; the others are lossless.
LOSSY_FORMATS = frozenset({"JPEG", "WEBP"})
#: The longest side each format's encoder can write (libjpeg-turbo's and libwebp's limits).
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}
_JPEG_MAX_EXIF = 65533  # the payload of one APP1 segment
_JPEG_MAX_XMP = 65533 - 29  # the same, less the segment's XMP namespace
_PNG_XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword PNG readers look for

_ORIENTATION = 0x0112
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"
_pillow_limit_lock = threading.RLock()  # a decode reopens its file under it


@dataclass(frozen=True)
class ImageData:
    """A decoded photo: float RGB for the model plus everything to write it back faithfully.

    Grayscale images hold three equal channels in ``rgb`` and are written back as one.
    """

    rgb: np.ndarray  # (h, w, 3) float32 in [0, 1]
    alpha: np.ndarray | None = None  # (h, w) uint8 or uint16, passed through untouched
    bit_depth: int = 8
    grayscale: bool = False
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation set to 1 (already applied), no thumbnail
    format: str | None = None  # source format, one of FORMATS
    dpi: tuple[float, float] | None = None  # print resolution (x, y), in the pixels' orientation
    xmp: bytes | None = None  # the XMP packet (ratings, keywords, captions), orientation removed

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def with_rgb(self, rgb: np.ndarray) -> ImageData:
        if rgb.shape != self.rgb.shape:
            raise ValueError(f"restored RGB has shape {rgb.shape}, expected {self.rgb.shape}")
        return dataclasses.replace(self, rgb=rgb)


# -- formats and limits -------------------------------------------------------------------


def parse_format(name: str) -> str:
    """Normalise a format name or extension (``jpg``, ``.TIFF``, ``webp``) to one of FORMATS."""
    key = name.strip().lower()
    key = key if key.startswith(".") else "." + key
    if key in EXTENSIONS:
        return EXTENSIONS[key]
    raise UsageError(f"unsupported output format {name!r}; use png, jpg, webp, tif or bmp")


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The output format implied by a file name's extension."""
    suffix = Path(path).suffix
    if not suffix:
        raise UsageError(
            f"{path}: no file extension to choose the format from; add one or name the format"
        )
    return parse_format(suffix)


def max_pixels_from_env() -> int:
    """The decompression-bomb limit: ANYRESTORE_MAX_PIXELS if set, else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)  # as the command line's --max-pixels, which reads it too
    except ValueError:
        raise UsageError(f"{MAX_PIXELS_ENV}={raw!r} is not a whole number of pixels") from None
    if value <= 0:
        raise UsageError(f"{MAX_PIXELS_ENV} must be positive, got {raw}")
    return value


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


# -- reading ------------------------------------------------------------------------------


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
            f"{label}: not an image file (supported: PNG, JPEG, WebP, TIFF, BMP)"
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
                f"{label}: unsupported image format {im.format} (supported: PNG, JPEG, WebP, TIFF, BMP)"
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
    """A file's first 12 bytes (fewer for a shorter or unreadable one)."""
    if is_bytes:
        return bytes(source[:12])
    try:
        with open(source, "rb") as f:
            return f.read(12)
    except OSError:
        return b""


def _signature(head: bytes) -> str | None:
    """The format a file's first bytes announce (WebP: RIFF....WEBP), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _unreadable_photo(head: bytes) -> str | None:
    """The name of a photo format Pillow cannot read that a file's first bytes announce."""
    if head[4:8] == b"ftyp":
        return _MEDIA_BRANDS.get(head[8:12])
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
            before = plane.getexif().get(_ORIENTATION, 1)
            plane.load()
            turned = before != plane.getexif().get(_ORIENTATION, 1)
            bands.append(np.asarray(plane, dtype=np.uint16))
    return np.stack(bands, axis=-1), turned


def _decode(im: Image.Image, fmt: str, opener: Callable[[], Image.Image]) -> ImageData:
    if _planar_sixteen_bit(im, fmt):
        orientation, exif = _orientation_and_exif(im, fmt)
        pixels, turned = _read_planes(im, opener)
        if not turned:
            pixels = _apply_orientation(pixels, orientation)
        alpha = np.ascontiguousarray(pixels[..., 3]) if im.mode == "RGBA" else None
        rgb = pixels[..., :3].astype(np.float32) * np.float32(1.0 / 65535)
        icc = im.info.get("icc_profile") or None
        dpi = _dpi(im, orientation)  # read before Pillow turned the planes
        return ImageData(rgb, alpha, 16, False, icc, exif, fmt, dpi, _xmp(im, orientation))
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
    turned_by_pillow = _pillow_turns(im, fmt)
    im.load()
    orientation, exif = _orientation_and_exif(im, fmt)
    icc = im.info.get("icc_profile") or None
    dpi = _dpi(im, orientation if orientation != 1 else turned_by_pillow)
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
            pixels = _unpremultiply(pixels)
        has_alpha, gray, bit_depth = im.mode == "RGBA", False, 16
        if not has_alpha:
            pixels, has_alpha = _key_colour_alpha(pixels, im.info.get("transparency"))
    elif im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            # signed or 32-bit integers (scientific TIFFs): no 16-bit scale to read them on
            raise InputError(
                f"integer image with values from {values.min()} to {values.max()}; only "
                "0-65535 can be read: convert it to unsigned 16 bit"
            )
        pixels = values.astype(np.uint16)[..., None]
        pixels, has_alpha = _key_colour_alpha(pixels, im.info.get("transparency"))
        gray, bit_depth = True, 16
    elif im.mode == "F":
        raise InputError("floating-point images are not supported; convert to 8 or 16 bit")
    else:
        target, icc = _eight_bit_target(im, icc)
        converted = _to_mode(im, target, icc)
        if im.mode == "CMYK":
            icc = None  # now sRGB
        pixels = np.asarray(converted)
        has_alpha, gray = target in ("LA", "RGBA"), target in ("L", "LA")
    pixels = _apply_orientation(pixels, orientation)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    alpha = np.ascontiguousarray(pixels[..., -1]) if has_alpha else None
    color = pixels[..., :-1] if has_alpha else pixels
    rgb = color.astype(np.float32)
    rgb *= np.float32(1.0 / (65535 if bit_depth == 16 else 255))
    if gray:
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    xmp = _xmp(im, orientation if orientation != 1 else int(turned_by_pillow))
    return ImageData(rgb, alpha, bit_depth, gray, icc, exif, fmt, dpi, xmp)


def _deep_ppm(im: Image.Image, fmt: str) -> np.ndarray | None:
    """(h, w, 3) uint16 of a binary colour PPM with more than 8 bits a sample (``dcraw -6``,
    netpbm), which Pillow scales to 8; None for any other file (or one cut short)."""
    if fmt != "PPM" or im.mode != "RGB" or len(im.tile) != 1 or im.tile[0][0] != "ppm":
        return None
    args = im.tile[0][3]
    maxval = int(args[1]) if isinstance(args, tuple) and len(args) > 1 else 255
    if not 255 < maxval <= 65535:
        return None
    w, h = im.size
    im.fp.seek(im.tile[0][2])
    data = im.fp.read(w * h * 6)
    if len(data) < w * h * 6:
        return None  # Pillow's reader says how it is truncated
    values = np.frombuffer(data, dtype=">u2").reshape(h, w, 3).astype(np.float64)
    return np.round(np.minimum(values, maxval) * (65535 / maxval)).astype(np.uint16)


def _pillow_turns(im: Image.Image, fmt: str) -> int:
    """The orientation Pillow applies itself as it loads a TIFF (and removes from its tags)."""
    if fmt != "TIFF":
        return 1
    try:
        return int(im.getexif().get(_ORIENTATION, 1) or 1)
    except Exception:  # unreadable metadata must not cost the image
        return 1


#: Print resolutions outside this range are taken as damaged metadata (JPEG holds 1-65535).
_DPI_RANGE = (1.0, 65535.0)


def _dpi(im: Image.Image, orientation: int) -> tuple[float, float] | None:
    """The file's print resolution, if it names one (a scan's 600 dpi), turned with the pixels."""
    try:
        x, y = (float(v) for v in im.info["dpi"])
    except (KeyError, TypeError, ValueError):
        return None
    low, high = _DPI_RANGE
    if not (low <= x <= high and low <= y <= high):
        return None
    return (y, x) if orientation in (5, 6, 7, 8) else (x, y)


def _unpremultiply(pixels: np.ndarray) -> np.ndarray:
    """(h, w, 4) 16-bit RGBA with colour multiplied by alpha, as straight (unassociated) alpha."""
    alpha = pixels[..., 3:].astype(np.float64)
    color = pixels[..., :3] * (65535.0 / np.maximum(alpha, 1.0))
    color = np.where(alpha > 0, np.clip(np.round(color), 0, 65535), 0)
    return np.concatenate([color.astype(np.uint16), pixels[..., 3:]], axis=-1)


def _key_colour_alpha(pixels: np.ndarray, key: Any) -> tuple[np.ndarray, bool]:
    """(h, w, c) 16-bit pixels with an alpha channel appended where a PNG tRNS chunk names
    one colour as transparent (Pillow converts 8-bit files itself, not 16-bit ones)."""
    if key is None:
        return pixels, False
    values = (key,) if isinstance(key, int) else tuple(key)
    if len(values) != pixels.shape[-1] or not all(isinstance(v, int) for v in values):
        return pixels, False
    clear = np.all(pixels == np.asarray(values, dtype=np.uint16), axis=-1)
    alpha = np.where(clear, np.uint16(0), np.uint16(65535))
    return np.concatenate([pixels, alpha[..., None]], axis=-1), True


def _eight_bit_target(im: Image.Image, icc: bytes | None) -> tuple[str, bytes | None]:
    mode = im.mode
    transparent = "transparency" in im.info
    if mode in ("1", "L"):
        return ("LA" if transparent else "L"), icc
    if mode in ("LA", "La"):
        return "LA", icc
    if mode.endswith(("A", "a")):  # RGBA, RGBa, PA (not LAB, which has no alpha)
        return "RGBA", icc
    if mode == "P":
        return ("RGBA" if transparent else "RGB"), icc
    if mode == "RGB":
        return ("RGBA" if transparent else "RGB"), icc
    if mode == "LAB":
        return "RGB", None
    return "RGB", icc  # CMYK, YCbCr, HSV, RGBX


def _to_mode(im: Image.Image, target: str, icc: bytes | None) -> Image.Image:
    if im.mode == "CMYK" and icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                im, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except Exception:  # a broken profile: fall back to Pillow's plain conversion
            log.warning("could not apply the CMYK colour profile; converting without it")
    return im if im.mode == target else im.convert(target)


#: The IFD0 tags of a TIFF that describe the photo rather than lay out its pixels (image
#: description, make, model, software, date, artist, copyright), and the pointers to the EXIF
#: and GPS sub-IFDs (camera settings, capture date, location): what a TIFF input carries to
#: the output and what a TIFF output takes from an input's EXIF.
_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
_SUB_IFDS = (0x8769, 0x8825)
_IFD_NAMES = {0x8769: "EXIF", 0x8825: "GPS"}
_INTEROP_IFD = 0xA005  # inside the EXIF IFD: an offset into the old file, not carried


def _descriptive_exif(exif: Image.Exif) -> Image.Exif | None:
    """The descriptive tags and the EXIF and GPS IFDs of ``exif``, without layout tags."""
    out = Image.Exif()
    for tag in _DESCRIPTIVE_TAGS:
        if isinstance(exif.get(tag), (str, bytes)):
            out[tag] = _latin1(exif[tag])
    for tag in _SUB_IFDS:
        ifd = {k: v for k, v in exif.get_ifd(tag).items() if k != _INTEROP_IFD}
        if ifd:
            out[tag] = ifd
    return out if len(out) else None


#: The integer types an orientation may be stored as: SHORT, LONG, SSHORT, SLONG.
_ONE_INTEGER = {3: "H", 4: "I", 8: "h", 9: "i"}


def _upright_exif(raw: bytes) -> bytes | None:
    """``raw`` EXIF with its orientation set to 1 (upright) in place, no thumbnail (IFD1), and
    every other byte as it was; None if it is not a TIFF structure this can do that in. Serialized again by Pillow, text that is not
    ASCII (a copyright's ©, a name's ü) came out as '?' and maker notes moved from the offsets
    they point from."""
    head = 6 if raw.startswith(b"Exif\0\0") else 0
    tiff = raw[head:]
    if tiff[:4] not in (b"II*\0", b"MM\0*"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    out = bytearray(tiff)
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(tiff):
            return None
        tag, kind, n = struct.unpack(order + "HHI", tiff[at : at + 8])
        if tag != _ORIENTATION:
            continue
        if n != 1 or kind not in _ONE_INTEGER:  # not a value this can set in place
            return None
        out[at + 8 : at + 12] = struct.pack(order + _ONE_INTEGER[kind], 1).ljust(4, b"\0")
    end = ifd + 2 + 12 * count
    if end + 4 > len(tiff):
        return None
    # No next IFD: IFD1 holds a thumbnail of the photo as it was (damaged, and sideways).
    out[end : end + 4] = bytes(4)
    return b"Exif\0\0" + bytes(out)  # with the header JPEG's writer expects (WebP's may lack it)


def _latin1(value: Any) -> Any:
    """Text that is not ASCII as the bytes Pillow decoded it from (latin-1), so that it is
    written back as it was: Pillow encodes ``str`` values as ASCII, with '?' for the rest."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("latin-1", "replace")
    return value


_XMP_ORIENTATION = (  # one space before it (\s+ would try every start in a run of them)
    re.compile(rb"\stiff:Orientation\s*=\s*(\"[^\"]*\"|'[^']*')"),
    re.compile(rb"<tiff:Orientation>[^<]*</tiff:Orientation>"),
)


def _xmp(im: Image.Image, orientation: int) -> bytes | None:
    """The photo's XMP packet (Lightroom's ratings, keywords, captions), carried as it is but
    for its orientation where one was applied to the pixels: the output is upright, and a
    viewer that reads XMP would turn it again."""
    xmp = im.info.get("xmp") or im.info.get(_PNG_XMP_KEY)  # the latter: a PNG's tEXt/zTXt
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not isinstance(xmp, bytes) or not xmp:
        return None
    if orientation > 1:
        for pattern in _XMP_ORIENTATION:
            xmp = pattern.sub(b"", xmp)
    return xmp


def _orientation_and_exif(im: Image.Image, fmt: str) -> tuple[int, bytes | None]:
    """The EXIF orientation, and EXIF bytes to carry (a TIFF's descriptive tags only)."""
    try:
        exif = im.getexif()
        orientation = int(exif.get(_ORIENTATION, 1) or 1)
        if fmt == "TIFF":
            carried = _descriptive_exif(exif)
            return (orientation if 1 <= orientation <= 8 else 1), (
                _exif_bytes(carried) if carried is not None else None
            )
        raw = im.info.get("exif")
        if not raw:
            return (orientation if 1 <= orientation <= 8 else 1), None
        upright = _upright_exif(raw) if isinstance(raw, bytes) else None
        if upright is None:  # not a plain TIFF structure: Pillow writes what it understood
            if _ORIENTATION in exif:
                del exif[_ORIENTATION]
            upright = exif.tobytes()
        return (orientation if 1 <= orientation <= 8 else 1), upright
    except Exception:  # unreadable metadata must not cost the image
        return 1, None


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1-8 as in Pillow's ImageOps.exif_transpose, on an (h, w, ...) array."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# -- writing ------------------------------------------------------------------------------


def _quantize(x: np.ndarray, maxval: int) -> np.ndarray:
    scaled = x * np.float32(maxval)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, maxval, out=scaled)
    return scaled.astype(np.uint16 if maxval > 255 else np.uint8)


def _rescale_alpha(alpha: np.ndarray, maxval: int) -> np.ndarray:
    if alpha.dtype == np.uint16 and maxval == 255:
        return ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if alpha.dtype == np.uint8 and maxval == 65535:
        return alpha.astype(np.uint16) * 257
    return alpha


def _icc_fits(icc: bytes | None, channels: int) -> bool:
    if not icc or len(icc) < 20:
        return False
    space = icc[16:20]
    return space == (b"GRAY" if channels <= 2 else b"RGB ")


def check_encodable(width: int, height: int, fmt: str) -> None:
    """UsageError when ``fmt`` cannot hold a ``width`` x ``height`` image, so that a caller
    can refuse before spending minutes restoring it."""
    fmt = parse_format(fmt)
    limit = MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise UsageError(
            f"{fmt} holds at most {limit} px a side and the image is {width}x{height}; "
            "write PNG or TIFF instead"
        )


def encode_image(image: ImageData, fmt: str, *, quality: int | None = None) -> bytes:
    """Encode to bytes; 16-bit survives in PNG and TIFF, JPEG drops alpha (with a warning).

    ``quality`` (1-100) sets JPEG's and WebP's; the lossless formats have none to set. An
    image the format cannot hold (``check_encodable``) is a UsageError.
    """
    fmt = parse_format(fmt)
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    check_encodable(image.width, image.height, fmt)
    depth = image.bit_depth if fmt in ("PNG", "TIFF") else 8
    maxval = 65535 if depth == 16 else 255
    color = image.rgb @ _LUMA if image.grayscale else image.rgb
    channels = [_quantize(color, maxval)]
    if channels[0].ndim == 2:
        channels[0] = channels[0][..., None]
    alpha = image.alpha
    if alpha is not None and fmt in ("JPEG", "BMP"):
        # BMP could carry it, but only in a header that readers (Pillow too) take as padding
        log.warning("%s keeps no alpha channel; the output drops it", fmt)
        alpha = None
    if alpha is not None:
        channels.append(_rescale_alpha(alpha, maxval)[..., None])
    pixels = np.concatenate(channels, axis=-1) if len(channels) > 1 else channels[0]
    gray = pixels.shape[-1] in (1, 2)
    # WebP has no gray modes; Pillow cannot write gray+alpha BMP or read 16-bit gray+alpha TIFF.
    if gray and (
        fmt == "WEBP"
        or (pixels.shape[-1] == 2 and (fmt == "BMP" or (fmt == "TIFF" and depth == 16)))
    ):
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:]], axis=-1)
    icc = image.icc_profile if _icc_fits(image.icc_profile, pixels.shape[-1]) else None
    if fmt == "TIFF":  # our own encoder: Pillow's (libtiff) cannot write the EXIF IFDs
        return _encode_tiff(pixels, icc, image.dpi, _tiff_exif(image.exif), image.xmp)
    if depth == 16:
        return _encode_png16(pixels, icc, image.exif, image.dpi, image.xmp)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    pil = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    params: dict[str, Any] = {}
    if icc and fmt != "BMP":
        params["icc_profile"] = icc
    exif = image.exif
    if exif and fmt == "JPEG" and len(exif) > _JPEG_MAX_EXIF:
        log.warning("the EXIF data (%d bytes) is too long for JPEG; the output drops it", len(exif))
        exif = None
    if exif and fmt in ("PNG", "JPEG", "WEBP"):
        params["exif"] = exif
    xmp = image.xmp
    if xmp and fmt == "JPEG" and len(xmp) > _JPEG_MAX_XMP:
        log.warning("the XMP data (%d bytes) is too long for JPEG; the output drops it", len(xmp))
        xmp = None
    if xmp and fmt in ("JPEG", "WEBP"):
        params["xmp"] = xmp
    elif xmp and fmt == "PNG":  # Pillow writes PNG's XMP only as an iTXt chunk given to it
        params["pnginfo"] = PngImagePlugin.PngInfo()
        params["pnginfo"].add_itxt(_PNG_XMP_KEY, xmp.decode("utf-8", "replace"))
    if image.dpi and fmt != "WEBP":  # WebP has no field for it
        params["dpi"] = image.dpi
    if fmt == "JPEG":
        # Full-resolution colour (4:4:4) at high quality; below 90 the usual 4:2:0, as a
        # lower quality asks for a smaller file
        q = JPEG_QUALITY if quality is None else quality
        params.update(quality=q, subsampling=0 if q >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=WEBP_QUALITY if quality is None else quality, method=4)
    buf = io.BytesIO()
    try:
        pil.save(buf, format=fmt, **params)
    except (OSError, ValueError) as exc:  # an encoder's own limit this module does not know
        raise UsageError(f"cannot encode the image as {fmt}: {first_line(exc)}") from None
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png16(
    pixels: np.ndarray,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None = None,
    xmp: bytes | None = None,
) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA) with the Sub filter on every row."""
    h, w, c = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    bpp = 2 * c
    filtered = np.empty((h, w * c * 2 + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type Sub: each byte minus the same byte of the previous pixel
    filtered[:, 1 : 1 + bpp] = raw[:, :bpp]
    np.subtract(raw[:, bpp:], raw[:, :-bpp], out=filtered[:, 1 + bpp :])
    out = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)),
    ]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    if dpi:  # pixels per metre, unit 1 (the metre)
        x, y = (max(1, round(v / 0.0254)) for v in dpi)
        out.append(_png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1)))
    if xmp:  # iTXt: keyword, no compression, no language or translated keyword
        out.append(_png_chunk(b"iTXt", _PNG_XMP_KEY.encode() + b"\0\0\0\0\0" + xmp))
    out.append(_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _tiff_exif(exif: bytes | None) -> Image.Exif | None:
    """What of an image's EXIF a TIFF output takes: its own layout and resolution tags win."""
    if not exif:
        return None
    try:
        loaded = Image.Exif()
        loaded.load(exif)
        return _descriptive_exif(loaded)
    except Exception:  # unreadable metadata must not cost the image
        log.warning("the EXIF data could not be read; the TIFF output drops it")
        return None


def _sub_ifd(code: int, values: dict[int, Any], at: int) -> bytes | None:
    """An EXIF or GPS IFD as it stands at offset ``at`` of a little-endian TIFF, or None (with
    a warning) where Pillow cannot write one of its values."""
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II", group=code)
        for key, value in values.items():
            if isinstance(value, str):  # text as the bytes it was read from, typed as text
                ifd.tagtype[key] = TiffTags.ASCII
                value = value.encode("latin-1", "replace")
            ifd[key] = value
        return ifd.tobytes(at)
    except (
        Exception
    ):  # a value of a type TIFF has no name for: the metadata must not cost the image
        log.warning(
            "the %s tags could not be written; the TIFF output drops them", _IFD_NAMES[code]
        )
        return None


def _encode_tiff(
    pixels: np.ndarray,
    icc: bytes | None,
    dpi: tuple[float, float] | None = None,
    exif: Image.Exif | None = None,
    xmp: bytes | None = None,
) -> bytes:
    """A little-endian 8- or 16-bit TIFF (by ``pixels``' dtype), Adobe Deflate with
    horizontal differencing (predictor 2).

    ``exif``'s descriptive tags go in IFD0; its EXIF and GPS IFDs follow the image's
    own tags' values, serialized by Pillow at their place in the file.
    """
    h, w, c = pixels.shape
    size = pixels.dtype.itemsize  # 1 or 2 bytes a sample
    rows_per_strip = max(1, (1 << 18) // (w * c * size))
    diff = pixels.astype(f"<u{size}")
    diff[:, 1:] = pixels[:, 1:] - pixels[:, :-1]  # unsigned arithmetic wraps, as predictor 2 does
    strips = [
        zlib.compress(diff[y : y + rows_per_strip].tobytes(), 6)
        for y in range(0, h, rows_per_strip)
    ]
    tags: list[tuple[int, int, bytes, int]] = []  # (tag, type, value bytes, count)

    def tag(code: int, kind: int, values: list[int] | bytes) -> None:
        if isinstance(values, bytes):
            tags.append((code, kind, values, len(values)))
        elif kind == 5:  # RATIONAL: (numerator, denominator) pairs
            count = len(values) // 2
            tags.append((code, kind, struct.pack(f"<{len(values)}I", *values), count))
        else:
            fmt = {3: "H", 4: "I"}[kind]
            tags.append((code, kind, struct.pack(f"<{len(values)}{fmt}", *values), len(values)))

    offsets_at = 8
    strip_offsets = []
    for s in strips:
        strip_offsets.append(offsets_at)
        offsets_at += len(s)
    tag(256, 4, [w])
    tag(257, 4, [h])
    tag(258, 3, [8 * size] * c)
    tag(259, 3, [8])  # Adobe Deflate
    tag(262, 3, [2 if c >= 3 else 1])  # RGB or BlackIsZero
    tag(273, 4, strip_offsets)
    tag(277, 3, [c])
    tag(278, 4, [rows_per_strip])
    tag(279, 4, [len(s) for s in strips])
    tag(284, 3, [1])  # chunky
    tag(317, 3, [2])  # horizontal differencing
    if c in (2, 4):
        tag(338, 3, [2])  # unassociated alpha
    if dpi:
        for code, value in zip((282, 283), dpi, strict=True):  # XResolution, YResolution
            ratio = Fraction(value).limit_denominator(1000)
            tag(code, 5, [max(1, ratio.numerator), ratio.denominator])
        tag(296, 3, [2])  # ResolutionUnit: inch
    if icc:
        tag(34675, 7, icc)
    if xmp:
        tag(700, 1, xmp)  # XMP, as BYTE
    ifd_at = offsets_at + (offsets_at & 1)
    head = b"II*\x00" + struct.pack("<I", ifd_at)
    return b"".join([head, *strips, b"\0" * (ifd_at - offsets_at), _ifd(tags, exif, ifd_at)])


def _exif_bytes(exif: Image.Exif) -> bytes:
    """EXIF for a PNG, JPEG or WebP output, laid out as the TIFF encoder lays out its own tags
    (Pillow's ``Exif.tobytes`` writes text that is not ASCII as '?')."""
    return b"Exif\0\0" + b"II*\x00" + struct.pack("<I", 8) + _ifd([], exif, 8)


def _ifd(tags: list[tuple[int, int, bytes, int]], exif: Image.Exif | None, ifd_at: int) -> bytes:
    """A little-endian IFD at offset ``ifd_at``: ``tags`` (code, type, value bytes, count),
    ``exif``'s descriptive tags and its EXIF and GPS IFDs, then the values too long for an
    entry and the sub-IFDs, each where its offset says."""
    tags = list(tags)
    subs = {}
    if exif is not None:
        for code in _DESCRIPTIVE_TAGS:
            if code in exif:
                text = exif[code]
                text = text if isinstance(text, bytes) else text.encode("latin-1", "replace")
                tags.append((code, 2, text.rstrip(b"\0") + b"\0", len(text.rstrip(b"\0")) + 1))
        subs = {code: exif[code] for code in _SUB_IFDS if code in exif}
        subs = {code: ifd for code, ifd in subs.items() if _sub_ifd(code, ifd, 0) is not None}
        for code in subs:  # the sub-IFD's offset, known once the values are placed
            tags.append((code, 4, bytes(4), 1))
    tags.sort()
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    sub_at = extra_at + sum(len(v) + (len(v) & 1) for _, _, v, _ in tags if len(v) > 4)
    blobs = []
    for code, values in subs.items():
        blob = _sub_ifd(code, values, sub_at) or b""
        blob += b"\0" * (len(blob) & 1)
        tags = [(c, k, struct.pack("<I", sub_at) if c == code else v, n) for c, k, v, n in tags]
        blobs.append(blob)
        sub_at += len(blob)
    ifd, extra = [struct.pack("<H", len(tags))], bytearray()
    for code, kind, value, count in tags:
        if len(value) <= 4:
            ifd.append(struct.pack("<HHI", code, kind, count) + value.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", code, kind, count, extra_at + len(extra)))
            extra += value + b"\0" * (len(value) & 1)
    ifd.append(struct.pack("<I", 0))
    return b"".join([*ifd, bytes(extra), *blobs])


def write_image(
    image: ImageData,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    quality: int | None = None,
) -> Path:
    """Encode and write atomically; the format comes from ``fmt`` or the extension."""
    return atomic_write(path, encode_image(image, fmt or format_for_path(path), quality=quality))
