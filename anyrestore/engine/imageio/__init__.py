"""Reading and writing photos without losing what the model does not touch.

EXIF orientation is applied on read; the ICC profile, EXIF, XMP, IPTC, text, print resolution
and alpha channel are carried to the output where its format holds them; grayscale stays
grayscale and 16-bit PNG/TIFF stay 16-bit; AVIF is read and written where Pillow has it (written
only where its libavif has an AV1 encoder). Writes are atomic (anyrestore.files). ``reading``
decodes, ``writing`` encodes, ``metadata`` carries what is not pixels, ``pixels`` holds the
pixel conversions reading, writing and the Python API use, ``formats`` the formats and their
limits.
"""

from anyrestore.engine.imageio.formats import (
    AVIF_QUALITY,
    DEFAULT_MAX_PIXELS,
    EXTENSIONS,
    FORMAT_EXTENSION,
    FORMATS,
    JPEG_QUALITY,
    LOSSY_FORMATS,
    MAX_PIXELS_ENV,
    MAX_SIDE,
    READ_ONLY_FORMATS,
    WEBP_QUALITY,
    ImageData,
    avif_supported,
    avif_writable,
    can_write,
    check_encodable,
    format_for_path,
    max_pixels_from_env,
    parse_format,
)
from anyrestore.engine.imageio.reading import read_image
from anyrestore.engine.imageio.writing import encode_image, write_image
from anyrestore.files import atomic_write

__all__ = [
    "AVIF_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "EXTENSIONS",
    "FORMATS",
    "FORMAT_EXTENSION",
    "JPEG_QUALITY",
    "LOSSY_FORMATS",
    "MAX_PIXELS_ENV",
    "MAX_SIDE",
    "READ_ONLY_FORMATS",
    "WEBP_QUALITY",
    "ImageData",
    "atomic_write",
    "avif_supported",
    "avif_writable",
    "can_write",
    "check_encodable",
    "encode_image",
    "format_for_path",
    "max_pixels_from_env",
    "parse_format",
    "read_image",
    "write_image",
]
