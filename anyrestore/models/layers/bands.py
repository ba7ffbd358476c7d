"""Pixel-local work on large maps in bands of rows, to bound the memory of a whole-image pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

#: Without gradients, maps larger than this many pixels go through band-capable layers in bands
#: of rows: their hidden maps (the FFN's is 2 x expansion times as wide as its input) were the
#: largest allocations of a whole-image pass.
BAND_PIXELS = 1 << 16
_whole_maps: ContextVar[bool] = ContextVar("anyrestore_whole_maps", default=False)


@contextmanager
def whole_maps() -> Iterator[None]:
    """Inside, ``in_bands`` never splits: every op runs once on the whole map (counting MACs,
    tracing a graph). Per thread: restorations in other threads keep their bands."""
    token = _whole_maps.set(True)
    try:
        yield
    finally:
        _whole_maps.reset(token)


def in_bands(
    fn: Callable[..., torch.Tensor], maps: tuple[torch.Tensor | None, ...], halo: int
) -> torch.Tensor:
    """``fn(*maps)``, computed on bands of rows when no gradient is needed and the maps are large.

    ``fn`` must be pixel-local apart from convolutions reaching ``halo`` rows up and down (zero
    padded at the map's edge), and every map must have the same height and width; a None (an
    absent residual) is passed through as None. Each band is computed with ``halo`` rows of
    context above and below, which are then cut away; the map's own top and bottom keep the
    zero padding, so the result equals the whole-map result. The output is channels-last.
    """
    h, w = next(m for m in maps if m is not None).shape[-2:]
    rows = max(1, BAND_PIXELS // max(w, 1))
    # torch.compile cannot read a ContextVar (a graph break): it traces the bands.
    whole = not torch.compiler.is_compiling() and _whole_maps.get()
    if torch.is_grad_enabled() or h <= rows or whole:
        return fn(*maps)
    out: torch.Tensor | None = None
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        lo, hi = max(0, top - halo), min(h, bottom + halo)
        rows_of = (None if m is None else m[:, :, lo:hi] for m in maps)
        band = fn(*rows_of)[:, :, top - lo : bottom - lo]
        if out is None:  # the dtype autocast gives
            shape = (*band.shape[:2], h, w)
            out = torch.empty(
                shape, dtype=band.dtype, device=band.device, memory_format=torch.channels_last
            )
        out[:, :, top:bottom] = band
    assert out is not None
    return out
