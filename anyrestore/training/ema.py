"""Exponential moving average of the weights, the copy that export writes when enabled."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of ``model`` whose floating tensors track ``decay * ema + (1 - decay) * w``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so early, random weights fade fast.
    Integer buffers (counters) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        own = self.model.state_dict()
        floats_ema, floats_new = [], []
        for key, value in model.state_dict().items():
            target = own[key]
            if target.is_floating_point():
                floats_ema.append(target)
                floats_new.append(value.detach().to(target.dtype))
            else:
                target.copy_(value)
        torch._foreach_lerp_(floats_ema, floats_new, 1.0 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])
