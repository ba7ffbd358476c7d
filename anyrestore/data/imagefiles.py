"""Finding and loading image files: Pillow, RGB, EXIF orientation applied, float tensors in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension), sorted by their path relative to it."""
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(
        (p for p in pattern if p.is_file() and is_image_file(p)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def load_image(path: str | Path) -> Tensor:
    """(3, h, w) float32 in [0, 1]; raises OSError/ValueError for unreadable files."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(img, dtype=np.float32) / 65535.0  # 16-bit grey
            tensor = torch.from_numpy(array).unsqueeze(0).expand(3, -1, -1).contiguous()
            return tensor.clamp(0, 1)
        array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def to_pil(image: Tensor) -> Image.Image:
    """(3, h, w) float in [0, 1] -> 8-bit RGB Pillow image (rounded)."""
    array = (
        (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    )
    return Image.fromarray(array)
