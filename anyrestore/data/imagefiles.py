"""Loading image files as float tensors: Pillow, EXIF orientation applied, RGB in [0, 1].

Which files are images, and how a folder of them is listed, is anyrestore.files' business;
this module is the one tensor reader that training data and the bench share.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from anyrestore.errors import DataError, InputError, first_line
from anyrestore.files import IMAGE_EXTENSIONS, is_image_file
from anyrestore.files import list_images as _list_images

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "list_images", "load_image"]

log = logging.getLogger("anyrestore")


def list_images(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension), sorted by their path relative to it; a
    folder that cannot be read is a DataError. Subfolders that cannot be read, and photos in
    formats Pillow cannot open here (HEIC, camera RAW), are named in a warning: a dataset
    would otherwise shrink without a word."""
    unreadable: list[OSError] = []
    passed_over: list[Path] = []
    try:
        found = _list_images(
            folder, recursive=recursive, unreadable=unreadable, passed_over=passed_over
        )
    except OSError as exc:
        raise DataError(f"cannot read {folder}: {exc.strerror or exc}") from None
    for exc in unreadable:
        log.warning("cannot read %s (%s); its images are left out", exc.filename, exc.strerror)
    if passed_over:
        kinds = sorted({p.suffix.lower() for p in passed_over})
        log.warning(
            "%d files in %s are in formats anyrestore cannot read (%s); left out: convert "
            "them to PNG or JPEG to use them",
            len(passed_over),
            folder,
            ", ".join(kinds),
        )
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(h, w) as ``load_image`` gives it without ``max_side`` (EXIF orientation applied),
    from the header alone; an unreadable file is an InputError."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception as err:  # Pillow raises many types for damaged files
        raise InputError(f"cannot read image {path}: {first_line(err)}") from None
    return (w, h) if turned else (h, w)


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) after ``load_image``'s downscale to ``max_side`` (None or 0: none)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_image(path: str | Path, *, max_side: int | None = None) -> Tensor:
    """(3, h, w) float32 in [0, 1]; raises OSError/ValueError for unreadable files.

    With ``max_side``, a larger image is downscaled (Lanczos) so its longer side fits.
    """
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        size = scaled_size(img.width, img.height, max_side)
        size = None if size == img.size else size
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # grey: resized as floats
            values = np.asarray(img, dtype=np.float32)
            if img.mode == "F":  # floats in [0, 1], as the engine reads them
                if values.size and not (np.isfinite(values).all() and values.max() <= 1.0):
                    raise ValueError("a float image's pixels must lie in [0, 1]")
            else:
                values = values / 65535.0
            grey = Image.fromarray(values, "F")
            if size is not None:  # (converted to RGB first, Pillow would clip it at 255)
                grey = grey.resize(size, Image.Resampling.LANCZOS)
            tensor = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())
            return tensor.unsqueeze(0).expand(3, -1, -1).clamp(0, 1).contiguous()
        img = img.convert("RGB")
        if size is not None:
            img = img.resize(size, Image.Resampling.LANCZOS)
        array = np.asarray(img)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
