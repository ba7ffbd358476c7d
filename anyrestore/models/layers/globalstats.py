"""Image-wide statistics that tiled inference can freeze.

Both architectures pool over the whole image (AnyIR's GatedDA mean/std, ClusIR's routing
and frequency priors). A tile sees only part of the image, so its statistics differ. Each
such statistic is computed through a ``GlobalStat`` module; the engine can *record* the
values on a whole (possibly downscaled) image and *replay* them for every tile, so all
tiles agree with one another and with the whole image. Models stay pure: they only route
their pooled values through this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import torch
from torch import nn

T = TypeVar("T")
Mode = Literal["live", "record", "replay"]


def _expand_batch(value: Any, batch: int) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] == batch:
            return value
        return value.expand(batch, *value.shape[1:])
    if isinstance(value, tuple):
        return tuple(_expand_batch(v, batch) for v in value)
    if isinstance(value, list):
        return [_expand_batch(v, batch) for v in value]
    if isinstance(value, dict):
        return {k: _expand_batch(v, batch) for k, v in value.items()}
    return value


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


class GlobalStat(nn.Module):
    """Computes a pooled statistic live, or records / replays it (batch of one recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.mode: Mode = "live"
        self._stored: Any = None

    def forward(self, compute: Callable[[], T], batch: int) -> T:
        if self.mode == "live":
            return compute()
        if self.mode == "record":
            value = compute()
            self._stored = _detach(value)
            return value
        if self._stored is None:
            raise RuntimeError("GlobalStat is in replay mode but nothing was recorded")
        return _expand_batch(self._stored, batch)


def set_global_mode(model: nn.Module, mode: Mode) -> None:
    """Put every ``GlobalStat`` in ``model`` into ``mode``."""
    for m in model.modules():
        if isinstance(m, GlobalStat):
            m.mode = mode
            if mode == "live":
                m._stored = None


def has_global_stats(model: nn.Module) -> bool:
    return any(isinstance(m, GlobalStat) for m in model.modules())


@contextmanager
def frozen_global_stats(model: nn.Module, reference: torch.Tensor) -> Iterator[None]:
    """Record statistics from ``reference`` (batch 1), replay them inside the block."""
    set_global_mode(model, "record")
    try:
        model(reference)
        set_global_mode(model, "replay")
        yield
    finally:
        set_global_mode(model, "live")
