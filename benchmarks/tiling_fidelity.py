"""PSNR between tiled and whole-image output, per model, with the trained (embedded) weights.

Restores one noisy photo (scikit-image scenes, as benchmarks/restore_large.py) whole
(``tile=0``) and tiled with the engine's defaults (tile size of the CPU unless given), and
prints PSNR(tiled, whole) per model. The statistics are recorded on a reference of the
model's ``reference_side``: the engine restores an image no larger than that in one pass, so
the tiles are forced here to show what they compute on larger photos. Issue 25's target: at
least 50 dB at 1024 px.

    python benchmarks/tiling_fidelity.py                       # anyir_t and clusir_t, 1024 px
    python benchmarks/tiling_fidelity.py --size 256 --tile 128 --models clusir_t

Not a test: nothing is asserted, numbers are printed (JSON with --json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from anyrestore.engine import Restorer
from anyrestore.weights import load_weights

HERE = Path(__file__).resolve().parent

_spec = importlib.util.spec_from_file_location("restore_large", HERE / "restore_large.py")
restore_large = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(restore_large)  # type: ignore[union-attr]
psnr, sample_photo = restore_large.psnr, restore_large.sample_photo


def measure(name: str, size: int, tile: int | None, overlap: int | None) -> dict:
    model = load_weights(name).model
    x = torch.from_numpy(sample_photo(size, size, 25.0, seed=1)).permute(2, 0, 1).contiguous()
    start = time.perf_counter()
    whole = Restorer(model, "cpu", "fp32", tile=0).restore_tensor(x)
    whole_s = time.perf_counter() - start
    side = int(getattr(model, "reference_side", 0)) or size
    tiled_restorer = Restorer(model, "cpu", "fp32", tile=tile, overlap=overlap, stats_side=side)
    start = time.perf_counter()
    tiled = tiled_restorer.restore_tensor(x)
    info = tiled_restorer.last_run
    return {
        "model": name,
        "size": size,
        "tiles": info.tiles if info else None,
        "tile": info.tile if info else None,
        "overlap": info.overlap if info else None,
        "psnr_db": round(psnr(tiled, whole), 2),
        "max_abs": round(float((tiled - whole).abs().max()), 5),
        "whole_s": round(whole_s, 1),
        "tiled_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="anyir_t,clusir_t", help="comma-separated names")
    parser.add_argument("--size", type=int, default=1024, help="side of the square photo")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: the CPU's)")
    parser.add_argument("--overlap", type=int, default=None, help="default: the model's hint")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models.split(","):
        row = measure(name, args.size, args.tile, args.overlap)
        rows.append(row)
        print(
            f"{name:>10} {args.size}px, {row['tiles']} tiles of {row['tile']} "
            f"(overlap {row['overlap']}): PSNR tiled vs whole {row['psnr_db']:.2f} dB, "
            f"max |diff| {row['max_abs']:.5f} ({row['whole_s']} s whole, {row['tiled_s']} s tiled)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
