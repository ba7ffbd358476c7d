"""What every restoration model declares to the code that runs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn


class RestorationModel(nn.Module):
    """Base class: RGB in [0, 1] in, restored RGB out, same size.

    Subclasses set ``arch`` and ``config`` and implement ``forward(x, return_aux=False)``.
    With ``return_aux=True`` the forward returns ``(out, aux)`` where ``aux["losses"]`` maps
    names to scalar auxiliary losses (already weighted, to be added to the training loss) and
    other keys carry inspection data (e.g. routing).
    """

    arch: ClassVar[str] = ""
    #: A model takes any height and width: it pads them (bottom/right, by reflection) to a
    #: multiple of this and crops its output back. The engine lays tiles on this grid, so
    #: tiles need no padding of their own.
    pad_multiple: ClassVar[int] = 1
    #: Pixels of context a tile needs on each side for tiled output to approach whole-image output.
    tile_overlap_hint: ClassVar[int] = 32
    #: Whether one traced graph, with the ``GlobalStat`` values as inputs where they are
    #: replayed, computes the model for every image: no Python decision depends on the
    #: image's values (ClusIR picks its experts per image) and no ``GlobalMap``. Such a
    #: model can run on OpenVINO (``anyrestore.engine.openvino_runtime``).
    traceable: ClassVar[bool] = False

    config: Any

    def config_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self.config)

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> Any:  # pragma: no cover
        raise NotImplementedError


@contextmanager
def step_by_step(model: nn.Module) -> Iterator[None]:
    """Run every layer the way the paper writes it, not in an equivalent faster form.

    Layers that fold several of the paper's steps into fewer matrix products declare a
    ``step_by_step`` flag and honour it, and nothing runs in bands of rows (whose context rows
    are computed twice). The result is the same up to rounding; what changes is which
    operations run, so ``count_macs`` counts the architecture's multiply-accumulates under it,
    as the papers do.
    """
    from anyrestore.models.layers.bands import whole_maps

    layers = [m for m in model.modules() if isinstance(getattr(m, "step_by_step", None), bool)]
    for layer in layers:
        layer.step_by_step = True
    try:
        with whole_maps():
            yield
    finally:
        for layer in layers:
            layer.step_by_step = False
