"""Write the README's demo input, anyrestore/assets/samples/sample_degraded.jpg.

    python scripts/make_sample_degraded.py [--kind L] [--seed 7]

It is `chelsea.jpg` (CC0, see SOURCES.md) degraded by the project's own synthesiser with a
fixed seed, so the demo is reproducible and the clean original ships beside it. The bench's
photo finder skips files named *degraded*.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anyrestore.data.degradations import degrade

SAMPLES = Path(__file__).resolve().parents[1] / "anyrestore" / "assets" / "samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="chelsea.jpg")
    parser.add_argument("--kind", default="L")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with Image.open(SAMPLES / args.source) as im:
        clean = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
    degraded = degrade(clean.permute(2, 0, 1), args.kind, seed=args.seed).clamp(0, 1)
    array = (degraded.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    out = SAMPLES / "sample_degraded.jpg"
    Image.fromarray(array).save(out, quality=95, subsampling=0)
    print(f"{out} ({args.source} with {args.kind}, seed {args.seed})")


if __name__ == "__main__":
    main()
