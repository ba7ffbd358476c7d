"""Image-wide values that tiled inference can freeze.

Both architectures pool over the whole image (AnyIR's GatedDA mean/std and its channel
attention maps, ClusIR's routing and frequency priors), and ClusIR also attends to keys spanning the whole image and filters
whole feature maps in the Fourier domain. A tile sees only part of the image, so all of
these differ. Each such value is computed through a ``GlobalStat`` module; the engine can
*record* the values on a whole (possibly downscaled) image and *replay* them for every tile,
so all tiles agree with one another and with the whole image. A ``GlobalMap`` is the same
for a value that is a feature map (ClusIR's spectral modulation): it is replayed cropped to
each tile's window, which the engine sets with ``set_tile_windows``. Models stay pure: they
only route their image-wide values through these modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

T = TypeVar("T")
#: (top, left, height, width) of a tile in pixels of the (padded) image.
Window = tuple[int, int, int, int]
Mode = Literal["live", "record", "replay"]


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


_LOW = (torch.float16, torch.bfloat16)


def _for_this_pass(value: Any, recorded_under_autocast: bool) -> Any:
    """Recorded values as this pass takes them: a pass without autocast (the fp32 retry of a
    tile that overflowed in fp16) must not meet fp16/bf16 values recorded under autocast.
    Values a model cast whole to bf16/fp16 recorded without autocast stay as they are: that
    model computes in their dtype."""
    if not recorded_under_autocast or _autocast_on(value):
        return value
    return _map_tensors(value, lambda t: t.float() if t.dtype in _LOW else t)


def _autocast_on(value: Any) -> bool:
    """Whether autocast is on for the device ``value``'s tensors are on."""
    first = next(_tensors(value), None)
    return first is not None and torch.is_autocast_enabled(first.device.type)


def _expand_batch(value: Any, batch: int) -> Any:
    def expand(t: torch.Tensor) -> torch.Tensor:
        return t if t.dim() == 0 or t.shape[0] == batch else t.expand(batch, *t.shape[1:])

    return _map_tensors(value, expand)


def _detach(value: Any) -> Any:
    return _map_tensors(value, torch.Tensor.detach)


class GlobalStat(nn.Module):
    """Computes a pooled statistic live, or records / replays it (batch of one recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.mode: Mode = "live"
        self._stored: Any = None
        self._under_autocast = False  # whether the stored values were recorded under it

    def forward(self, compute: Callable[[], T], batch: int) -> T:
        if self.mode == "live":
            return compute()
        if self.mode == "record":
            value = compute()
            self._stored = _detach(value)
            self._under_autocast = _autocast_on(value)
            return value
        if self._stored is None:
            raise RuntimeError("GlobalStat is in replay mode but nothing was recorded")
        return _expand_batch(_for_this_pass(self._stored, self._under_autocast), batch)


class GlobalMap(GlobalStat):
    """An image-wide (b, c, h, w) feature map, replayed as the crop under each tile.

    Replay needs the tiles' windows (``set_tile_windows``): the recorded map lies on the
    reference's grid, which is the image's grid scaled by ``1 / scale``. It is resampled
    (bilinear) to the image's grid once if the scales differ, then cropped per tile. Without
    windows, the recorded map must match the input's grid (replay on the recorded image);
    with windows but no known scale (a crop or mosaic reference), the map is computed live.
    """

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[Window] | None = None
        self.image_size: tuple[int, int] = (0, 0)
        self.scale: tuple[float, float] | None = None
        self._resampled: torch.Tensor | None = None

    def forward(  # type: ignore[override]
        self, compute: Callable[[], torch.Tensor], like: torch.Tensor
    ) -> torch.Tensor:
        if self.mode != "replay":
            return super().forward(compute, like.shape[0])
        if self._stored is None:
            raise RuntimeError("GlobalMap is in replay mode but nothing was recorded")
        h, w = like.shape[-2:]
        if self.windows is None:
            if self._stored.shape[-2:] != (h, w):
                raise RuntimeError("GlobalMap replay on another size needs tile windows")
            stored = _for_this_pass(self._stored, self._under_autocast)
            return _expand_batch(stored, like.shape[0])
        if self.scale is None:
            return compute()
        if len(self.windows) != like.shape[0]:
            raise RuntimeError(f"{len(self.windows)} tile windows for a batch of {like.shape[0]}")
        factor = self.windows[0][2] // h  # pixels per cell of this feature grid
        full = self._on_image_grid(self.image_size[0] // factor, self.image_size[1] // factor)
        crops = [
            full[:, :, y // factor : y // factor + h, x // factor : x // factor + w]
            for y, x, _, _ in self.windows
        ]
        crop = torch.cat(crops) if len(crops) > 1 else crops[0]
        return _for_this_pass(crop.to(like.device, non_blocking=True), self._under_autocast)

    def _on_image_grid(self, height: int, width: int) -> torch.Tensor:
        stored = self._stored
        if stored.shape[-2:] == (height, width) and self.scale == (1.0, 1.0):
            return stored
        if self._resampled is None or self._resampled.shape[-2:] != (height, width):
            # Cell i of the image's grid sits at (i + 0.5) / scale - 0.5 on the reference's.
            # Kept in host memory: at the image's size it would bound a GPU's memory by the
            # image, not the tile; each tile takes its crop to the device.
            up = F.interpolate(
                stored.float().cpu(),
                scale_factor=self.scale,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )[..., :height, :width]
            ph, pw = height - up.shape[-2], width - up.shape[-1]
            if ph or pw:
                up = F.pad(up, (0, pw, 0, ph), mode="replicate")
            self._resampled = up.to(stored.dtype)
        return self._resampled


def set_global_mode(model: nn.Module, mode: Mode) -> None:
    """Put every ``GlobalStat`` in ``model`` into ``mode``."""
    for m in model.modules():
        if isinstance(m, GlobalStat):
            m.mode = mode
            if mode == "live":
                m._stored = None
            if mode != "replay" and isinstance(m, GlobalMap):
                m.windows, m.scale, m._resampled = None, None, None


def set_tile_windows(
    model: nn.Module,
    windows: list[Window],
    image_size: tuple[int, int],
    scale: tuple[float, float] | None,
) -> None:
    """Tell every ``GlobalMap`` where the next batch of tiles lies in the (padded) image.

    ``scale`` is image pixels per reference pixel along (height, width), or None when the
    reference is not the image at one scale.
    """
    for m in model.modules():
        if isinstance(m, GlobalMap):
            if m.scale != scale or m.image_size != image_size:
                m._resampled = None
            m.windows, m.image_size, m.scale = list(windows), image_size, scale


def has_global_stats(model: nn.Module) -> bool:
    return any(isinstance(m, GlobalStat) for m in model.modules())


def _recorded_finite(model: nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for m in model.modules()
        if isinstance(m, GlobalStat)
        for t in _tensors(m._stored)
        if t.is_floating_point()
    )


@contextmanager
def frozen_global_stats(model: nn.Module, reference: torch.Tensor) -> Iterator[bool]:
    """Record statistics from ``reference`` (batch 1), replay them inside the block.

    Yields whether the block runs in fp32: when the recording pass overflowed under
    autocast (fp16), the statistics are recorded again in fp32 and the tiles run in fp32
    too, rather than replay infinities into every tile.
    """
    set_global_mode(model, "record")
    try:
        model(reference)
        if _recorded_finite(model):
            set_global_mode(model, "replay")
            yield False
            return
        with torch.autocast(reference.device.type, enabled=False):
            model(reference.float())
            set_global_mode(model, "replay")
            yield True
    finally:
        set_global_mode(model, "live")
