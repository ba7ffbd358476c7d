"""Loading image files as float tensors: Pillow, EXIF orientation applied, RGB in [0, 1].

Which files are images, and how a folder of them is listed, is anyrestore.files' business;
this module is the one tensor reader that training data and the bench share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from anyrestore.errors import DataError
from anyrestore.files import IMAGE_EXTENSIONS, is_image_file
from anyrestore.files import list_images as _list_images

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "list_images", "load_image"]


def list_images(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension), sorted by their path relative to it; a
    folder that cannot be read is a DataError."""
    try:
        return _list_images(folder, recursive=recursive)
    except OSError as exc:
        raise DataError(f"cannot read {folder}: {exc.strerror or exc}") from None


def load_image(path: str | Path, *, max_side: int | None = None) -> Tensor:
    """(3, h, w) float32 in [0, 1]; raises OSError/ValueError for unreadable files.

    With ``max_side``, a larger image is downscaled (Lanczos) so its longer side fits.
    """
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        size = None
        if max_side and max(img.size) > max_side:
            scale = max_side / max(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: resized as floats
            grey = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0, "F")
            if size is not None:  # (converted to RGB first, Pillow would clip it at 255)
                grey = grey.resize(size, Image.Resampling.LANCZOS)
            tensor = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())
            return tensor.unsqueeze(0).expand(3, -1, -1).clamp(0, 1).contiguous()
        img = img.convert("RGB")
        if size is not None:
            img = img.resize(size, Image.Resampling.LANCZOS)
        array = np.asarray(img)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
