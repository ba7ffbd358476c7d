"""Adam(W) and the learning-rate schedules of the two papers.

AnyIR (App. A.2): Adam, lr 2e-4, betas (0.9, 0.999), cosine decay (with the linear warmup of
the PromptIR code). ClusIR (Sec. 4.1): Adam, rate halved after half of the epochs. Schedules are
written over fractions of the run so that a short run follows the same shape as a long one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from anyrestore.training.config import OptimConfig, Recipe, ScheduleConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW; weight decay only on parameters of two or more dimensions: kernels and
    matrices, and shaped scales such as GatedDA's (1, C, 1, 1) ``tau`` and attention's
    (heads, 1, 1) temperature; not norms, biases or scalars."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    # PyTorch's fused kernel: the same update as its per-tensor loop in one pass over all
    # parameters (3-4x faster on a CPU, benchmarks/optimizer_step.py), where it has one.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in decay + rest)
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def lr_factor(
    recipe: Recipe, cfg: ScheduleConfig, base_lr: float, total_steps: int
) -> Callable[[int], float]:
    """Multiplier of the base rate for the optimizer step that follows ``step`` finished ones."""
    warmup = round(recipe.warmup * total_steps)
    milestones = sorted(round(m * total_steps) for m in cfg.milestones)
    floor = cfg.min_lr / base_lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if recipe.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, cfg: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(recipe, cfg, base_lr, total_steps)
    )
