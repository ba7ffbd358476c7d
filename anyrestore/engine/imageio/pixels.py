"""Pixel conversions shared by reading, writing and the Python API: quantizing to 8 or 16 bits,
alpha, Pillow's modes to the few a photo is decoded to, and the EXIF orientation."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from PIL import Image, ImageCms

log = logging.getLogger("anyrestore")

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"


def unpremultiply(pixels: np.ndarray) -> np.ndarray:
    """(h, w, 4) 16-bit RGBA with colour multiplied by alpha, as straight (unassociated) alpha."""
    alpha = pixels[..., 3:].astype(np.float64)
    color = pixels[..., :3] * (65535.0 / np.maximum(alpha, 1.0))
    color = np.where(alpha > 0, np.clip(np.round(color), 0, 65535), 0)
    return np.concatenate([color.astype(np.uint16), pixels[..., 3:]], axis=-1)


def key_colour_alpha(pixels: np.ndarray, key: Any) -> tuple[np.ndarray, bool]:
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


def eight_bit_target(im: Image.Image, icc: bytes | None) -> tuple[str, bytes | None]:
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


def to_mode(im: Image.Image, target: str, icc: bytes | None) -> Image.Image:
    if im.mode == "CMYK" and icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                im, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except Exception:  # a broken profile: fall back to Pillow's plain conversion
            log.warning("could not apply the CMYK colour profile; converting without it")
    return im if im.mode == target else im.convert(target)


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
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


def quantize(x: np.ndarray, maxval: int) -> np.ndarray:
    scaled = x * np.float32(maxval)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, maxval, out=scaled)
    return scaled.astype(np.uint16 if maxval > 255 else np.uint8)


def rescale_alpha(alpha: np.ndarray, maxval: int) -> np.ndarray:
    if alpha.dtype == np.uint16 and maxval == 255:
        return ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if alpha.dtype == np.uint8 and maxval == 65535:
        return alpha.astype(np.uint16) * 257
    return alpha


def icc_fits(icc: bytes | None, channels: int) -> bool:
    if not icc or len(icc) < 20:
        return False
    space = icc[16:20]
    return space == (b"GRAY" if channels <= 2 else b"RGB ")
