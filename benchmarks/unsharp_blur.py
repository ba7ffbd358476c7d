"""How far a fixed sharpening filter gets on the benchmark's blur: a reference for models.

The synthetic ``blur`` kind is camera shake along random 5-21 px trajectories. A model that only
learnt to sharpen a little, the same way everywhere, would do about what a Gaussian unsharp mask
does: ``x + amount * (x - gauss(x, sigma))``. This script scores a grid of such masks on the
photos of a folder, as ``anyrestore bench --suite synthetic`` would (same pairs, same PSNR), and
prints the mean PSNR gain over the blurred input for each.

    python benchmarks/unsharp_blur.py corpus/val-photos --max-side 256 512
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from anyrestore.bench.synthetic import find_photos, synthetic_pairs
from anyrestore.data.degradations.kernels import filter2d, kernel_grid
from anyrestore.metrics import psnr


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of a (c, h, w) image, borders reflected (the degradations' own filter)."""
    x_grid, y_grid = kernel_grid(2 * (int(3 * sigma) + 1) + 1, x.device)
    k = torch.exp(-(x_grid**2 + y_grid**2) / (2 * sigma**2))
    return filter2d(x.unsqueeze(0), (k / k.sum()).unsqueeze(0))[0]


def unsharp(x: Tensor, sigma: float, amount: float) -> Tensor:
    return (x + amount * (x - gaussian_blur(x, sigma))).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="folder of clean photos")
    parser.add_argument("--max-side", type=int, nargs="+", default=[512])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    args = parser.parse_args()
    photos = find_photos(args.images)
    print("side  sigma  amount  mean gain (dB)  per photo")
    for side in args.max_side:
        pairs = list(synthetic_pairs(["blur"], photos, max_side=side))
        for sigma in args.sigmas:
            for amount in args.amounts:
                gains = [
                    float(psnr(unsharp(p.degraded, sigma, amount), p.clean))
                    - float(psnr(p.degraded, p.clean))
                    for p in pairs
                ]
                mean = sum(gains) / len(gains)
                per = " ".join(f"{g:+.2f}" for g in gains)
                print(f"{side:4d}  {sigma:5.1f}  {amount:6.2f}  {mean:+14.3f}  {per}")


if __name__ == "__main__":
    main()
