"""Does bf16 autocast train in the direction fp32 would? One step's gradients, compared.

A CPU fine-tune in bf16 that drifts where the same recipe on a GPU did not raises the question
whether the CPU's bf16 arithmetic bends the gradient. This script takes trained weights, a
batch of clean crops (the centre of each photo in a folder) and, kind by kind, the same
degraded batch; it computes the training loss's gradient once in fp32 and once under bf16
autocast with channels-last features (the CPU's fast training path), BatchNorm on its recorded
statistics so both see the same normalisation, and prints the cosine between the two
gradients and the ratio of their norms. The model card quotes these figures.

    python benchmarks/bf16_gradients.py corpus/train
    python benchmarks/bf16_gradients.py corpus/train --weights anyir_t-synthetic-v6 --crop 256 --json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from anyrestore.bench.synthetic import find_photos, load_photo
from anyrestore.data.degradations import degrade
from anyrestore.training.config import Config, resolve
from anyrestore.training.losses import RestorationLoss
from anyrestore.training.setup import freeze_batch_norms
from anyrestore.weights import load_weights

KINDS = ("haze", "low_light", "rain", "snow", "noise_25")


def centre_crops(folder: Path, crop: int, count: int) -> torch.Tensor:
    """(count, 3, crop, crop): the centre of the first ``count`` photos at least ``crop`` wide,
    one per scene: a corpus holds each photo at several scales (``NAME__s050``, ``NAME__s100``),
    the largest of which is taken."""
    crops = []
    scenes: dict[str, Path] = {}
    for path in find_photos(folder):  # sorted: s025 < s050 < s100, the last one stays
        scenes[re.sub(r"__s\d{3}$", "", path.stem)] = path
    for path in scenes.values():
        photo = load_photo(path, max_side=None)
        h, w = photo.shape[-2:]
        if min(h, w) < crop:
            continue
        top, left = (h - crop) // 2, (w - crop) // 2
        crops.append(photo[:, top : top + crop, left : left + crop])
        if len(crops) == count:
            return torch.stack(crops)
    raise SystemExit(f"{folder}: fewer than {count} photos of at least {crop} px")


def gradient(model, criterion, lq, gt, bf16: bool) -> tuple[torch.Tensor, float]:
    """The loss's gradient over all parameters as one vector, and the loss."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pred, aux = model(lq, return_aux=True)
    loss, _ = criterion(pred.float(), gt, aux.get("losses") if aux else None)
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return torch.cat(grads).double(), float(loss.detach())  # float64: the cosine of ~6M terms


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="clean photos (e.g. the training corpus)")
    parser.add_argument("--weights", default=None, help="weights name or file (the default)")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_weights(args.weights)
    model = loaded.model.float().train().to(memory_format=torch.channels_last)
    freeze_batch_norms(model)
    config = Config()  # the defaults: the paper's loss for this architecture
    recipe = resolve(config, model.arch)
    criterion = RestorationLoss(
        **recipe.terms(), aux=recipe.aux, fourier_norm=config.loss.fourier_norm
    )
    gt = centre_crops(args.folder, args.crop, args.batch)
    rows = []
    for kind in args.kinds.split(","):
        lq = torch.round(degrade(gt, kind, seed=1) * 255) / 255
        lq = lq.contiguous(memory_format=torch.channels_last)
        g32, loss32 = gradient(model, criterion, lq, gt, bf16=False)
        g16, loss16 = gradient(model, criterion, lq, gt, bf16=True)
        rows.append(
            {
                "kind": kind,
                "loss_fp32": round(loss32, 5),
                "loss_bf16": round(loss16, 5),
                "cosine": round(float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)), 4),
                "norm_ratio": round(float(g16.norm() / g32.norm()), 3),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return rows
    print(
        f"{'kind':10s} {'loss fp32':>10s} {'loss bf16':>10s} {'cosine':>8s} {'|bf16|/|fp32|':>14s}"
    )
    for r in rows:
        print(
            f"{r['kind']:10s} {r['loss_fp32']:10.5f} {r['loss_bf16']:10.5f} "
            f"{r['cosine']:8.4f} {r['norm_ratio']:14.3f}"
        )
    return rows


if __name__ == "__main__":
    main()
