"""Inference: padding, tiling and blending, image I/O (device and precision: compute)."""

from anyrestore.compute import ComputePath, choose_path, resolve_device
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
    "ComputePath",
    "FORMATS",
    "ImageData",
    "Restorer",
    "choose_path",
    "RunInfo",
    "encode_image",
    "format_for_path",
    "read_image",
    "resolve_device",
    "write_image",
]
