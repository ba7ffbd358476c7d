"""The formats anyrestore reads and writes, their limits, and the decoded photo (ImageData)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anyrestore.errors import UsageError
from anyrestore.files import IMAGE_EXTENSIONS
from anyrestore.files import pillow_reads_avif as avif_supported
from anyrestore.files import pillow_writes_avif as avif_writable

#: Read and written; AVIF where Pillow has it (``avif_supported``, ``avif_writable``).
FORMATS = ("PNG", "JPEG", "WEBP", "AVIF", "TIFF", "BMP")
READ_ONLY_FORMATS = ("PPM",)
#: The extensions of the formats anyrestore writes (a subset of files.IMAGE_EXTENSIONS);
#: ``.avif`` only where Pillow writes it, so that an AVIF input's output is not named
#: ``.avif`` before the input is found unreadable, or when it could not be written.
EXTENSIONS = {
    ext: fmt
    for ext, fmt in IMAGE_EXTENSIONS.items()
    if fmt in FORMATS and (fmt != "AVIF" or avif_writable())
}
FORMAT_EXTENSION = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "WEBP": ".webp",
    "AVIF": ".avif",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "ANYRESTORE_MAX_PIXELS"
JPEG_QUALITY = 95
WEBP_QUALITY = 95
#: AVIF's scale is not JPEG's: at 90, with full-resolution colour, a photo comes back about
#: as close to what was encoded as from JPEG at 95, in about half the file.
AVIF_QUALITY = 90
#: The formats a quality setting changes; the others are lossless.
LOSSY_FORMATS = frozenset({"JPEG", "WEBP", "AVIF"})
#: The longest side each format's encoder can write (libjpeg-turbo's and libwebp's limits;
#: for AVIF, the longest libavif reads back by default).
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383, "AVIF": 32768}
#: The most pixels libavif decodes by default (16384 x 16384): a larger AVIF would not open.
AVIF_MAX_PIXELS = 16384 * 16384
#: What a Pillow without AVIF says to a user who asked for it.
AVIF_MISSING = (
    "this Pillow cannot read or write AVIF (Pillow 11.3 or newer, as pip installs it, can)"
)
#: What a Pillow whose libavif only decodes says to a user who asked for AVIF.
AVIF_READ_ONLY = "this Pillow's libavif has no AV1 encoder (it reads AVIF, cannot write it)"


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
    iptc: bytes | None = None  # IPTC-NAA records (caption, byline, keywords) of a JPEG or TIFF
    # PNG text chunks, a JPEG comment: (keyword, text); a comment's bytes that were not UTF-8
    # are surrogate escapes (written back as they were; metadata.plain_text reads them)
    text: tuple[tuple[str, str], ...] = ()

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


def parse_format(name: str) -> str:
    """Normalise a format name or extension (``jpg``, ``.TIFF``, ``webp``) to one of FORMATS."""
    key = name.strip().lower()
    key = key if key.startswith(".") else "." + key
    if key in EXTENSIONS:
        return EXTENSIONS[key]
    if key == ".avif":  # not in EXTENSIONS: this Pillow does not write AVIF
        reason = AVIF_READ_ONLY if avif_supported() else AVIF_MISSING
        raise UsageError(f"cannot write AVIF: {reason}; write another format")
    raise UsageError(f"unsupported output format {name!r}; use png, jpg, webp, avif, tif or bmp")


def can_write(fmt: str | None) -> bool:
    """Whether anyrestore writes ``fmt`` (one of FORMATS) with the Pillow installed here."""
    return fmt in EXTENSIONS.values()


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
    if fmt == "AVIF" and width * height > AVIF_MAX_PIXELS:
        raise UsageError(
            f"an AVIF of {width}x{height} would be too large to open again (at most "
            f"{AVIF_MAX_PIXELS:,} pixels); write PNG or TIFF instead"
        )
