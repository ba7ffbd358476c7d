"""The synthetic suite: the project's own degradations applied to clean photos, fixed seeds.

Without a folder it uses the public-domain sample photos shipped in ``anyrestore/assets/samples``
(files named ``*degraded*`` there are inputs for the README, not clean photos, and are skipped).
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import Tensor

from anyrestore.bench.quality import Pair
from anyrestore.data.imagefiles import image_size, load_image, scaled_size
from anyrestore.errors import DataError, InputError, first_line
from anyrestore.files import list_images, unreadable_summary
from anyrestore.metrics import SSIM_WINDOW

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
#: The clean photos shipped there (sources and licences in SOURCES.md).
SAMPLE_PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
DEFAULT_MAX_SIDE = 512


def find_photos(folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """Clean photos in ``folder`` (or the shipped samples), sorted by name."""
    root = Path(folder) if folder is not None else SAMPLES_DIR
    where = str(root) if folder is not None else f"the shipped samples ({root})"
    if not root.is_dir():
        raise DataError(
            f"photo folder not found: {where}; expected a folder of .png/.jpg (or other image) files"
        )
    passed_over: list[Path] = []
    try:
        listed = list_images(root, recursive=False, passed_over=passed_over)
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None
    if passed_over and folder is not None:  # a score of the rest looks like one of all
        raise InputError(
            f"{where} holds {unreadable_summary(passed_over)}: "
            f"{', '.join(sorted(p.name for p in passed_over)[:3])}"
            f"{', ...' if len(passed_over) > 3 else ''}; the bench scores every photo: convert "
            "them to PNG or JPEG, or move them out"
        )
    if folder is None:  # the four shipped photos: not what a fix next to them left there
        photos = [p for p in listed if p.name in SAMPLE_PHOTOS]
    else:
        photos = [p for p in listed if "degraded" not in p.name.lower()]
    if not photos:
        raise DataError(
            f"no clean photos in {where}; expected .png/.jpg (or other image) files (names containing "
            "'degraded' are skipped)"
        )
    return photos


def check_photo_sizes(photos: Sequence[Path], max_side: int | None) -> None:
    """Every photo large enough to score at the size it will be scored at, from the headers:
    a thumbnail found after an hour of scoring would end the run with no table."""
    for path in photos:
        h, w = image_size(path)
        sw, sh = scaled_size(w, h, max_side)
        if min(sw, sh) < SSIM_WINDOW:
            scaled = f" at --max-side {max_side} ({w}x{h} as stored)" if (sw, sh) != (w, h) else ""
            raise InputError(
                f"{path}: {sw}x{sh}{scaled} is too small to score (SSIM needs {SSIM_WINDOW} px "
                "a side)"
            )


def load_photo(path: Path, max_side: int | None = DEFAULT_MAX_SIDE) -> Tensor:
    """An RGB photo (EXIF orientation applied) as (3, h, w) float in [0, 1], downscaled so its
    longer side <= ``max_side``."""
    try:
        return load_image(path, max_side=max_side)
    except Exception as exc:  # Pillow raises many types (a decompression bomb: its own)
        raise InputError(f"cannot read image {path}: {first_line(exc)}") from None


def seed_for(name: str, kind: str) -> int:
    """A fixed seed per (photo, kind), independent of which other photos are in the folder."""
    return zlib.crc32(f"{name}:{kind}".encode())


def synthetic_pairs(
    kinds: Sequence[str],
    photos: Sequence[Path],
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> Iterator[Pair]:
    """Every photo under every kind of degradation, degraded with ``seed_for(photo, kind)``.

    A pair is named by its photo's stem, or by the whole file name where two photos share a stem
    (``a.png``, ``a.jpg``), so per-image records and saved images never merge or overwrite.
    """
    from anyrestore.data.degradations import degrade

    stems = Counter(p.stem for p in photos)
    for path in photos:
        clean = load_photo(path, max_side)
        name = path.stem if stems[path.stem] == 1 else path.name
        for kind in kinds:
            degraded = degrade(clean.unsqueeze(0), kind, seed=seed_for(path.name, kind))
            yield Pair(kind, name, degraded[0].clamp(0, 1).float(), clean)
