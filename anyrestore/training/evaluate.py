"""Validation: mean PSNR on the fixed validation split, shared out over the processes."""

from __future__ import annotations

from typing import Any

import torch

from anyrestore.compute import autocast
from anyrestore.metrics import psnr
from anyrestore.training import distributed


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    limit: int,
    device: torch.device,
    dist: distributed.Dist,
    precision: str,
) -> float | None:
    """Mean PSNR (dB) over ``limit`` validation items spread evenly over the set (the papers'
    layouts list it kind by kind: the first items would all be one kind), shared out over
    ranks."""
    size = len(dataset)
    n = size if not limit else min(limit, size)
    if n == 0:
        return None
    was_training = model.training
    model.eval()
    total = 0.0
    for i in [k * size // n for k in range(n)][dist.rank :: dist.world_size]:
        item = dataset[i]
        lq = item["lq"].unsqueeze(0).to(device)
        gt = item["gt"].unsqueeze(0).to(device)
        with autocast(device, precision):
            pred = model(lq)  # models take any size (they pad to their multiple themselves)
        pred = pred.float().clamp(0, 1)
        total += float(psnr(pred, gt.float()).sum())
    model.train(was_training)
    (total,) = distributed.all_sum(dist, [total], device)
    return total / n
