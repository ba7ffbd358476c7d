"""Padding, overlapping tiles and seam-free blending.

Tiles start every ``tile - overlap`` pixels and the last one is aligned to the image's far
edge, so all tiles share one shape (they can be batched) and neighbours overlap by at least
``overlap``. Each tile's output is weighted by a separable window that is 0 in the outer
quarter of the overlap on sides facing a neighbour (the pixels with the least context are
never used), rises as a raised cosine over the middle half, and is 1 elsewhere, including
along the image border. For an overlap of exactly ``overlap`` the windows of two
neighbours sum to one; the final division by the summed window handles longer overlaps.
A model whose receptive field radius is at most ``overlap // 4`` therefore gives the same
output tiled as whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def pad_to_size(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (b,c,h,w) on the bottom and right to ``height`` x ``width`` by reflection.

    Reflection needs the pad to be shorter than the side; tiny images fall back to
    replicating the edge.
    """
    h, w = x.shape[-2:]
    ph, pw = height - h, width - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis; the last tile ends exactly at ``size``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def window_1d(length: int, overlap: int, lead: bool, trail: bool) -> torch.Tensor:
    """Blending weights along one tile axis; ``lead``/``trail`` mark sides with a neighbour."""
    weights = torch.ones(length, dtype=torch.float64)
    margin = overlap // 4
    ramp = overlap - 2 * margin
    if ramp > 0:
        i = torch.arange(ramp, dtype=torch.float64)
        rise = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / ramp)
        edge = torch.cat([torch.zeros(margin, dtype=torch.float64), rise])[:length]
        if lead:
            weights[: edge.numel()] *= edge
        if trail:
            weights[length - edge.numel() :] *= edge.flip(0)
    return weights


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an image lie; every tile is ``tile_h`` x ``tile_w``."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: int) -> TileGrid:
        tile_h, tile_w = min(tile, height), min(tile, width)
        return cls(
            height,
            width,
            tile_h,
            tile_w,
            overlap,
            tuple(tile_starts(height, tile, overlap)),
            tuple(tile_starts(width, tile, overlap)),
        )

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def positions(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    def _axis_windows(self, starts: tuple[int, ...], length: int, size: int) -> list[torch.Tensor]:
        return [window_1d(length, self.overlap, s > 0, s + length < size) for s in starts]

    def windows(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-row-of-tiles and per-column-of-tiles 1-D windows."""
        return (
            self._axis_windows(self.ys, self.tile_h, self.height),
            self._axis_windows(self.xs, self.tile_w, self.width),
        )

    def weight_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed window is separable: sum over the grid of wy(y) wx(x) = Wy(y) Wx(x)."""
        wys, wxs = self.windows()
        sum_y = torch.zeros(self.height, dtype=torch.float64)
        sum_x = torch.zeros(self.width, dtype=torch.float64)
        for y, wy in zip(self.ys, wys, strict=True):
            sum_y[y : y + self.tile_h] += wy
        for x, wx in zip(self.xs, wxs, strict=True):
            sum_x[x : x + self.tile_w] += wx
        return sum_y, sum_x


TileForward = Callable[[torch.Tensor], torch.Tensor]


def run_tiled(
    x: torch.Tensor,
    forward: TileForward,
    tile: int,
    overlap: int,
    batch: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    multiple: int = 1,
) -> torch.Tensor:
    """Restore a (1,c,h,w) CPU tensor tile by tile; the result is assembled on the CPU.

    ``forward`` maps a (n,c,th,tw) CPU batch of tiles to its CPU output; only one batch of
    tiles is ever on the device. The grid is laid over the image padded to ``multiple``
    (``tile`` and ``overlap`` must be multiples of it), so every tile starts on the model's
    downsampling grid exactly where the whole-image pass has it, and tiles at the bottom or
    right edge are reflect-padded exactly as the whole image would be.
    """
    _, c, h, w = x.shape
    if tile % multiple or overlap % multiple:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {multiple}")
    grid = TileGrid.build(h + (-h) % multiple, w + (-w) % multiple, tile, overlap)
    wys, wxs = grid.windows()
    row_of = {y: i for i, y in enumerate(grid.ys)}
    col_of = {xx: i for i, xx in enumerate(grid.xs)}
    out = torch.zeros((1, c, h, w), dtype=torch.float32)
    positions = grid.positions()
    done = 0
    for first in range(0, len(positions), batch):
        chunk = positions[first : first + batch]
        tiles = torch.cat(
            [
                pad_to_size(
                    x[:, :, y : y + grid.tile_h, xx : xx + grid.tile_w], grid.tile_h, grid.tile_w
                )
                for y, xx in chunk
            ]
        )
        restored = forward(tiles.contiguous()).float()
        for (y, xx), t in zip(chunk, restored, strict=True):
            th, tw = min(grid.tile_h, h - y), min(grid.tile_w, w - xx)
            weight = wys[row_of[y]][:th, None] * wxs[col_of[xx]][None, :tw]
            out[0, :, y : y + th, xx : xx + tw] += t[:, :th, :tw] * weight.float()
        done += len(chunk)
        if on_tile is not None:
            on_tile(done, len(positions))
    sum_y, sum_x = grid.weight_sums()
    # Two broadcast divisions: the full (h, w) weight map is never materialised.
    out.mul_((1.0 / sum_x[:w]).float())
    out.mul_((1.0 / sum_y[:h]).float()[:, None])
    return out
