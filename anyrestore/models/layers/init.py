"""Random initialisation that a checkpoint's shape-checking skeleton skips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def init_unless_meta(
    tensor: torch.Tensor, init: Callable[..., torch.Tensor], **kwargs: Any
) -> torch.Tensor:
    """Apply ``init`` (an ``nn.init`` function) to ``tensor`` unless it is on the meta device.

    Loading a checkpoint first builds its model on the meta device to check shapes
    (weights/checkpoint.py). There ``normal_`` and ``orthogonal_`` run Python reference
    kernels whose first call imports torch._dynamo, seconds of a process's start, to fill a
    tensor that has no values anyway. On a real device the init runs as usual, so seeded
    initialisations are unchanged.
    """
    if not tensor.is_meta:
        init(tensor, **kwargs)
    return tensor
