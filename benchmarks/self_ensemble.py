"""Would averaging mirrored and rotated passes (a "self-ensemble") help? PSNR gain per kind.

    python benchmarks/self_ensemble.py corpus/val-photos --model anyir_t --photos 3 --max-side 384

Each held-out photo is degraded as ``bench --suite synthetic`` degrades it, restored once per
transform of the square's symmetry group (4 rotations, each also mirrored), transformed back,
and the averages of several sets of those passes are scored against the single pass. The
model is blind, so a pass that turns the photo upside down also hands it a sky at the bottom
and rain falling the other way: the per-kind table shows which kinds that costs.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from anyrestore.bench.quality import score
from anyrestore.bench.suites import select_tasks
from anyrestore.bench.synthetic import find_photos, synthetic_pairs
from anyrestore.engine import Restorer
from anyrestore.weights import load_weights

Transform = tuple[int, bool]  # quarter turns, mirrored first
ALL: list[Transform] = [(k, m) for m in (False, True) for k in range(4)]
SETS: dict[str, list[Transform]] = {
    "mirror": [(0, False), (0, True)],
    "upside-down": [(0, False), (2, True)],
    "flips": [(0, False), (0, True), (2, True), (2, False)],
    "rotations": [(k, False) for k in range(4)],
    "all 8": ALL,
}


def apply(x: torch.Tensor, t: Transform) -> torch.Tensor:
    turns, mirrored = t
    return torch.rot90(x.flip(-1) if mirrored else x, turns, (-2, -1))


def undo(y: torch.Tensor, t: Transform) -> torch.Tensor:
    turns, mirrored = t
    y = torch.rot90(y, -turns, (-2, -1))
    return y.flip(-1) if mirrored else y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", help="folder of clean held-out photos")
    parser.add_argument("--model", default="anyir_t", help="model name or weights reference")
    parser.add_argument("--photos", type=int, default=3, help="the first N photos")
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    restorer = Restorer(load_weights(args.model).model, device="cpu", precision="fp32", tile=0)
    photos = find_photos(args.images)[: args.photos]
    kinds = [t.kind for t in select_tasks("synthetic")]
    gains: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for pair in synthetic_pairs(kinds, photos, max_side=args.max_side):
        passes = {t: undo(restorer.restore_tensor(apply(pair.degraded, t)), t) for t in ALL}
        single = score(passes[(0, False)], pair.clean)[0]
        for name, members in SETS.items():
            mean = torch.stack([passes[t] for t in members]).mean(0)
            gains[pair.kind][name].append(score(mean, pair.clean)[0] - single)
        print(f"{pair.kind} {pair.name}", flush=True)

    print(f"\nPSNR gain over one pass, dB ({len(photos)} photos, {args.max_side} px, {args.model})")
    print(f"{'kind':10s}" + "".join(f"{name:>13s}" for name in SETS))
    every: dict[str, list[float]] = defaultdict(list)
    for kind in kinds:
        row = gains[kind]
        print(f"{kind:10s}" + "".join(f"{sum(row[n]) / len(row[n]):+13.3f}" for n in SETS))
        for n in SETS:
            every[n].extend(row[n])
    print(f"{'mean':10s}" + "".join(f"{sum(every[n]) / len(every[n]):+13.3f}" for n in SETS))


if __name__ == "__main__":
    main()
