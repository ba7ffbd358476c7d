"""Inference: device and precision, padding, tiling and blending, image I/O."""

from anyrestore.engine.device import resolve_device, resolve_precision
from anyrestore.engine.imageio import (
    FORMATS,
    ImageData,
    encode_image,
    format_for_path,
    read_image,
    write_image,
)
from anyrestore.engine.restorer import AUTO_TILE, Restorer, RunInfo

__all__ = [
    "AUTO_TILE",
    "FORMATS",
    "ImageData",
    "Restorer",
    "RunInfo",
    "encode_image",
    "format_for_path",
    "read_image",
    "resolve_device",
    "resolve_precision",
    "write_image",
]
