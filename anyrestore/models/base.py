"""What every restoration model declares to the code that runs it."""

from __future__ import annotations

import dataclasses
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

    config: Any

    def config_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self.config)

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> Any:  # pragma: no cover
        raise NotImplementedError
