"""Parameter and multiply-accumulate counts, the papers' "Params" and "FLOPs".

The papers' FLOPs are multiply-accumulates (MACs): PromptIR's "132G" is 132 GMACs at
224x224. ``torch.utils.flop_counter`` counts 2 FLOPs per MAC for convolutions and matrix
products, so ``count_macs`` halves its total. Element-wise ops, norms, softmax and FFTs are
not counted, as in the fvcore/thop counters the papers used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int | tuple[int, int] = 224) -> int:
    """Multiply-accumulates of one eval-mode forward on a 1x3xHxW input."""
    h, w = (size, size) if isinstance(size, int) else size
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.rand(1, 3, h, w, device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)
