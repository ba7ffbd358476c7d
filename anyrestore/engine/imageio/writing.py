"""Encoding a photo to the formats anyrestore writes, and writing it atomically.

16-bit PNG and every TIFF are encoded here with numpy and zlib (Pillow has no 16-bit RGB mode,
and its TIFF writer goes through libtiff, which cannot write a photo's EXIF and GPS IFDs); the
rest through Pillow; the ICC profile, EXIF, XMP, IPTC, text and print resolution are carried
where the format holds them.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from anyrestore.engine.imageio.formats import (
    AVIF_QUALITY,
    JPEG_QUALITY,
    WEBP_QUALITY,
    ImageData,
    check_encodable,
    format_for_path,
    parse_format,
)
from anyrestore.engine.imageio.metadata import (
    IPTC_TAG,
    JPEG_MAX_COMMENT,
    JPEG_MAX_IPTC,
    JPEG_MAX_XMP,
    JPEG_SEGMENT,
    PNG_XMP_KEY,
    exif_without_orientation,
    jpeg_app13,
    jpeg_comment,
    plain_text,
    tiff_exif,
    tiff_ifd,
)
from anyrestore.engine.imageio.pixels import LUMA, icc_fits, quantize, rescale_alpha
from anyrestore.errors import UsageError, first_line
from anyrestore.files import atomic_write

log = logging.getLogger("anyrestore")


def encode_image(image: ImageData, fmt: str, *, quality: int | None = None) -> bytes:
    """Encode to bytes; 16-bit survives in PNG and TIFF, JPEG drops alpha (with a warning).

    ``quality`` (1-100) sets JPEG's, WebP's and AVIF's; the lossless formats have none. An
    image the format cannot hold (``check_encodable``) is a UsageError.
    """
    fmt = parse_format(fmt)
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    check_encodable(image.width, image.height, fmt)
    depth = image.bit_depth if fmt in ("PNG", "TIFF") else 8
    maxval = 65535 if depth == 16 else 255
    color = image.rgb @ LUMA if image.grayscale else image.rgb
    channels = [quantize(color, maxval)]
    if channels[0].ndim == 2:
        channels[0] = channels[0][..., None]
    alpha = image.alpha
    if alpha is not None and fmt in ("JPEG", "BMP"):
        # BMP could carry it, but only in a header that readers (Pillow too) take as padding
        log.warning("%s keeps no alpha channel; the output drops it", fmt)
        alpha = None
    if alpha is not None:
        channels.append(rescale_alpha(alpha, maxval)[..., None])
    pixels = np.concatenate(channels, axis=-1) if len(channels) > 1 else channels[0]
    gray = pixels.shape[-1] in (1, 2)
    # WebP has no gray modes, AVIF's gray+alpha reads back as RGBA; Pillow cannot write
    # gray+alpha BMP or read 16-bit gray+alpha TIFF.
    if gray and (
        fmt == "WEBP"
        or (pixels.shape[-1] == 2 and fmt == "AVIF")
        or (pixels.shape[-1] == 2 and (fmt == "BMP" or (fmt == "TIFF" and depth == 16)))
    ):
        pixels = np.concatenate(
            [_gray_as_rgb(pixels[..., 0], image.icc_profile), pixels[..., 1:]], -1
        )
    icc = image.icc_profile if icc_fits(image.icc_profile, pixels.shape[-1]) else None
    if fmt == "TIFF":  # our own encoder: Pillow's (libtiff) cannot write the EXIF IFDs
        exif_tags = tiff_exif(image.exif)
        return _encode_tiff(pixels, icc, image.dpi, exif_tags, image.xmp, image.iptc)
    if depth == 16:
        return _encode_png16(pixels, icc, image.exif, image.dpi, image.xmp, image.text)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    pil = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    params: dict[str, Any] = {}
    if icc and fmt != "BMP":
        params["icc_profile"] = icc
    exif = image.exif
    if exif and fmt == "JPEG" and len(exif) > JPEG_SEGMENT:
        log.warning("the EXIF data (%d bytes) is too long for JPEG; the output drops it", len(exif))
        exif = None
    if exif and fmt == "AVIF":
        exif = exif_without_orientation(exif)  # upright already: no rotation box needed
        if exif is None:
            log.warning("the EXIF data is not a TIFF structure AVIF can hold; the output drops it")
    if exif and fmt in ("PNG", "JPEG", "WEBP", "AVIF"):
        params["exif"] = exif
    xmp = image.xmp
    if xmp and fmt == "JPEG" and len(xmp) > JPEG_MAX_XMP:
        log.warning("the XMP data (%d bytes) is too long for JPEG; the output drops it", len(xmp))
        xmp = None
    if xmp and fmt in ("JPEG", "WEBP", "AVIF"):
        params["xmp"] = xmp
    if fmt == "PNG" and (xmp or image.text):
        params["pnginfo"] = PngImagePlugin.PngInfo()
        if xmp:  # Pillow writes PNG's XMP only as an iTXt chunk given to it
            params["pnginfo"].add_itxt(PNG_XMP_KEY, xmp.decode("utf-8", "replace"))
        for key, value in image.text:  # tEXt, or iTXt for text latin-1 cannot hold
            params["pnginfo"].add_text(key, plain_text(value).replace("\0", ""))
    if fmt == "JPEG":
        params.update(_jpeg_comment_and_iptc(image))
    if image.dpi and fmt not in ("WEBP", "AVIF"):  # they have no field for it
        params["dpi"] = image.dpi
    if fmt == "JPEG":
        # Full-resolution colour (4:4:4) at high quality; below 90 the usual 4:2:0, as a
        # lower quality asks for a smaller file
        q = JPEG_QUALITY if quality is None else quality
        params.update(quality=q, subsampling=0 if q >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=WEBP_QUALITY if quality is None else quality, method=4)
    elif fmt == "AVIF":
        # As JPEG: full-resolution colour from 90 up (the default), 4:2:0 below
        q = AVIF_QUALITY if quality is None else quality
        subsampling = "4:0:0" if mode == "L" else "4:4:4" if q >= 90 else "4:2:0"
        params.update(quality=q, subsampling=subsampling)
        if mode == "RGBA":  # alpha passes through untouched, as in the other formats
            params["advanced"] = {"alpha:lossless": "1"}
    buf = io.BytesIO()
    try:
        try:
            pil.save(buf, format=fmt, **params)
        except ValueError as exc:
            if "advanced" not in params or "codec-specific" not in str(exc):
                raise
            # An AV1 encoder other than libaom takes no such option: alpha as lossy as colour
            log.warning("this AVIF encoder cannot keep alpha exact; the output compresses it")
            del params["advanced"]
            buf = io.BytesIO()
            pil.save(buf, format=fmt, **params)
    except (OSError, ValueError) as exc:  # an encoder's own limit this module does not know
        raise UsageError(f"cannot encode the image as {fmt}: {first_line(exc)}") from None
    return buf.getvalue()


def _jpeg_comment_and_iptc(image: ImageData) -> dict[str, bytes]:
    """Pillow's JPEG options that carry ``image``'s comment (a PNG's Comment text) and IPTC
    (an APP13 segment among the ones Pillow writes after the EXIF), where they fit."""
    params = {}
    comment = jpeg_comment(image.text)
    if len(comment) > JPEG_MAX_COMMENT:
        log.warning(
            "the comment (%d bytes) is too long for JPEG; the output drops it", len(comment)
        )
    elif comment:
        params["comment"] = comment
    iptc = image.iptc
    if iptc and len(iptc) > JPEG_MAX_IPTC:
        log.warning("the IPTC data (%d bytes) is too long for JPEG; the output drops it", len(iptc))
    elif iptc:
        params["extra"] = jpeg_app13(iptc)
    return params


def _png_text(key: str, value: str) -> bytes:
    """A PNG text chunk: tEXt where latin-1 holds the text, else iTXt (UTF-8)."""
    value = plain_text(value).replace("\0", "")
    try:
        return _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # iTXt: keyword, no compression, no language or translation
        data = key.encode("latin-1", "replace") + b"\0\0\0\0\0" + value.encode("utf-8")
        return _png_chunk(b"iTXt", data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png16(
    pixels: np.ndarray,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None = None,
    xmp: bytes | None = None,
    text: tuple[tuple[str, str], ...] = (),
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
        out.append(_png_chunk(b"iTXt", PNG_XMP_KEY.encode() + b"\0\0\0\0\0" + xmp))
    out.extend(_png_text(key, value) for key, value in text)
    out.append(_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _gray_as_rgb(gray: np.ndarray, icc: bytes | None) -> np.ndarray:
    """(h, w) gray values as (h, w, 3) RGB for a format without gray modes: through the
    image's Gray profile into sRGB where it has one (an RGB file cannot carry a Gray profile,
    and its values read as sRGB would shift the tones), else copied to the three channels."""
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if not icc_fits(icc, 1):
        return rgb
    if gray.dtype != np.uint8:  # littleCMS through Pillow converts 8-bit gray only
        log.warning("the Gray colour profile cannot go into a 16-bit RGB file; the output drops it")
        return rgb
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # type: ignore[arg-type]
        srgb = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(Image.fromarray(gray, "L"), source, srgb, outputMode="RGB")
    except Exception:  # a broken profile
        log.warning("could not apply the Gray colour profile; the output drops it")
        return rgb
    return np.asarray(out)


def _encode_tiff(
    pixels: np.ndarray,
    icc: bytes | None,
    dpi: tuple[float, float] | None = None,
    exif: Image.Exif | None = None,
    xmp: bytes | None = None,
    iptc: bytes | None = None,
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
    if iptc:
        tag(IPTC_TAG, 7, iptc)  # IPTC-NAA, as UNDEFINED
    ifd_at = offsets_at + (offsets_at & 1)
    head = b"II*\x00" + struct.pack("<I", ifd_at)
    return b"".join([head, *strips, b"\0" * (ifd_at - offsets_at), tiff_ifd(tags, exif, ifd_at)])


def write_image(
    image: ImageData,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    quality: int | None = None,
) -> Path:
    """Encode and write atomically; the format comes from ``fmt`` or the extension."""
    return atomic_write(path, encode_image(image, fmt or format_for_path(path), quality=quality))
