"""Does a model leave an undamaged photo alone? PSNR of its output against its clean input.

An all-in-one model is never told what is wrong with a photo, so a clean one is a fair test:
the answer should be the photo itself. This script restores each photo of a folder at the
benchmark's size (``anyrestore bench --suite synthetic`` loads them the same way) and prints
the PSNR of the output against the photo, and the mean brightness of both (a model that takes
a pale scene for haze darkens it). The model card quotes these figures.

    python benchmarks/clean_photos.py corpus/val-photos
    python benchmarks/clean_photos.py corpus/val-photos --weights anyir_t-synthetic-v3 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from anyrestore.bench.synthetic import DEFAULT_MAX_SIDE, find_photos, load_photo
from anyrestore.metrics import psnr
from anyrestore.weights import load_weights


def score(weights: str | None, folder: Path, max_side: int) -> list[dict]:
    """One row per photo: PSNR of the output against the photo, and both mean brightnesses."""
    model = load_weights(weights).model.float().eval()
    rows = []
    for path in find_photos(folder):
        clean = load_photo(path, max_side)
        with torch.inference_mode():
            out = model(clean[None]).clamp(0, 1)[0]
        rows.append(
            {
                "image": path.name,
                "psnr": round(float(psnr(out, clean)), 2),
                "mean_in": round(float(clean.mean()), 3),
                "mean_out": round(float(out.mean()), 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="photos, e.g. corpus/val-photos")
    parser.add_argument("--weights", default=None, help="entry name or file (default: default)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = score(args.weights, args.folder, args.max_side)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        print(f"{r['psnr']:6.2f} dB  mean {r['mean_in']:.2f} -> {r['mean_out']:.2f}  {r['image']}")
    values = sorted(r["psnr"] for r in rows)
    print(f"{len(rows)} photos: {values[0]:.2f} to {values[-1]:.2f} dB")


if __name__ == "__main__":
    main()
