"""Compose a before/after grid from `anyrestore bench --save-images DIR` output.

    anyrestore bench --suite synthetic --images corpus/val --model clusir_t --model anyir_t \
        --save-images /tmp/saved
    python scripts/make_before_after.py /tmp/saved/synthetic --image NAME \
        --kinds noise_25 H L+R S --models clusir_t anyir_t -o docs/images/before_after.jpg

Every restored tile in the grid is an image the tool wrote; this script only lays them out
(rows: degradation kinds; columns: degraded input, each model, clean reference) and labels them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image, ImageDraw

LABEL_HEIGHT = 22


def _safe(name: str) -> str:
    # The bench's file-name rule (anyrestore/bench/quality.py).
    return re.sub(r"[^A-Za-z0-9_.+=#-]+", "_", name).strip("._") or "x"


def compose(root: Path, image: str, kinds: list[str], models: list[str], size: int) -> Image.Image:
    columns = ["degraded", *models, "clean"]
    cell_w = size
    rows = []
    for kind in kinds:
        folder = root / _safe(kind)
        tiles = []
        for col in columns:
            with Image.open(folder / f"{_safe(image)}_{_safe(col)}.png") as im:
                im = im.convert("RGB")
                scale = cell_w / im.width
                tiles.append(
                    im.resize((cell_w, round(im.height * scale)), Image.Resampling.LANCZOS)
                )
        rows.append((kind, tiles))
    cell_h = max(t.height for _, tiles in rows for t in tiles)
    grid = Image.new(
        "RGB", (cell_w * len(columns), LABEL_HEIGHT + len(rows) * (cell_h + LABEL_HEIGHT)), "white"
    )
    draw = ImageDraw.Draw(grid)
    for j, col in enumerate(columns):
        draw.text((j * cell_w + 4, 4), "input" if col == "degraded" else col, fill="black")
    for i, (kind, tiles) in enumerate(rows):
        top = LABEL_HEIGHT + i * (cell_h + LABEL_HEIGHT)
        draw.text((4, top + 4), kind, fill="black")
        for j, tile in enumerate(tiles):
            grid.paste(tile, (j * cell_w, top + LABEL_HEIGHT))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="DIR/<suite> written by --save-images")
    parser.add_argument("--image", required=True, help="image name (file stem) to show")
    parser.add_argument("--kinds", nargs="+", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--size", type=int, default=256, help="width of each cell")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    grid = compose(args.root, args.image, args.kinds, args.models, args.size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output, quality=90)
    print(args.output)


if __name__ == "__main__":
    main()
