"""Regenerate docs/images/degradations_grid.jpg: every degradation applied to one real photo.

Needs scikit-image (a dev dependency) for its bundled sample photos:
    python scripts/make_degradation_grid.py [--photo astronaut|coffee] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from anyrestore.data.degradations import CDD11, SINGLE_KINDS, degrade

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "degradations_grid.jpg"


def load_photo(name: str, size: int) -> torch.Tensor:
    from skimage import data  # dev dependency, only for this docs image

    array = getattr(data, name)()
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(array[top : top + side, left : left + side]).resize(
        (size, size), Image.LANCZOS
    )
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def tile(img: torch.Tensor, label: str, font: ImageFont.ImageFont) -> Image.Image:
    array = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    size = array.shape[1]
    canvas = Image.new("RGB", (size, size + 28), "white")
    canvas.paste(Image.fromarray(array), (0, 28))
    ImageDraw.Draw(canvas).text((6, 5), label, fill="black", font=font)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="astronaut", choices=["astronaut", "coffee"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    clean = load_photo(args.photo, args.size)
    font = ImageFont.load_default(size=18)
    tiles = [tile(clean, "clean", font)]
    for kind in SINGLE_KINDS:
        tiles.append(tile(degrade(clean, kind, seed=args.seed), kind, font))
    for label, composite in CDD11.items():
        if "+" in label:  # the CDD-11 singles are already shown above
            tiles.append(
                tile(degrade(clean, label, seed=args.seed), f"{label} ({composite})", font)
            )
    tw, th = tiles[0].size
    rows = -(-len(tiles) // args.cols)
    grid = Image.new(
        "RGB", (args.cols * tw + (args.cols - 1) * 4, rows * th + (rows - 1) * 4), "white"
    )
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % args.cols) * (tw + 4), (i // args.cols) * (th + 4)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".jpg", dir=args.out.parent)
    os.close(fd)
    grid.save(tmp, quality=88)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
