"""Run a restoration model on images of any size: device, precision, padding, tiling, OOM retry."""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np
import torch

from anyrestore.choices import check_strength
from anyrestore.compute import (
    ComputePath,
    choose_path,
    empty_cache,
    is_out_of_memory,
    prepare_model,
)
from anyrestore.engine.imageio import ImageData
from anyrestore.engine.reference import METHODS, Method, make_reference, reference_scale
from anyrestore.engine.tiling import TileGrid, run_tiled
from anyrestore.errors import DeviceError, InputError, NonFiniteOutput, UsageError, first_line
from anyrestore.models.base import RestorationModel
from anyrestore.models.layers.globalstats import (
    frozen_global_stats,
    has_global_stats,
    set_tile_windows,
)
from anyrestore.models.layers.pointwise import pointwise_kernel

if TYPE_CHECKING:  # imported where used: OpenVINO is an optional extra
    from anyrestore.engine.openvino_runtime import OpenVinoModel

log = logging.getLogger("anyrestore")

#: With ``tile=None`` an image is tiled when either side exceeds this, with tiles this size.
#: On the CPU a 512 px tile needs less memory than the 1024 px statistics pass that comes
#: before the tiles, and overlaps waste less than with smaller tiles (docs/performance.md).
AUTO_TILE = {"cpu": 512, "mps": 512, "cuda": 1024}
#: Longest side of the reference that global statistics are recorded on before tiling, by
#: default the tile size clamped to [MIN_STATS_SIDE, DEFAULT_STATS_SIDE]: the recording pass
#: then needs no more memory than a tile (above the floor), unless the model asks for a
#: larger one (its ``reference_side``, as both shipped models do).
DEFAULT_STATS_SIDE = 512
MIN_STATS_SIDE = 256
DEFAULT_STATS_METHOD: Method = "stride"
#: The smallest tile: what the out-of-memory retries stop at, and the least ``tile`` taken.
#: Smaller tiles give the model too little context (and thousands of passes for a photo).
MIN_TILE = 32

_model_locks: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = (
    weakref.WeakKeyDictionary()
)
_model_locks_guard = threading.Lock()


def _lock_for(model: torch.nn.Module) -> threading.RLock:
    """One lock per model object, shared by every ``Restorer`` of it.

    A tiled restoration records image-wide statistics on the model's own modules and
    replays them tile by tile: two threads restoring with one model at once (an app's thread
    pool behind ``anyrestore.restore``) would replay each other's statistics.
    """
    with _model_locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


#: How far outside [0, 1] input pixels may stray (rounding in a caller's colour maths) before
#: they are refused as another scale: 0-255 floats, or [-1, 1] as some pipelines keep them.
PIXEL_TOLERANCE = 0.01


def check_pixels(x: torch.Tensor) -> None:
    """Refuse input that would come back as a plausible-looking wrong picture, not an error.

    Integer pixels or floats on another scale would be clipped to white or black, NaN would
    spread through every convolution, and an empty image fails deep inside torch.
    """
    if not x.is_floating_point():
        raise InputError(
            f"expected float pixels in [0, 1], got {x.dtype} (divide 8-bit values by 255)"
        )
    h, w = x.shape[-2:]
    if x.numel() == 0:
        raise InputError(f"the image is empty ({w}x{h} pixels)")
    low, high = (float(v) for v in torch.aminmax(x.float()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError("the image has NaN or infinite pixels")
    if low < -PIXEL_TOLERANCE or high > 1.0 + PIXEL_TOLERANCE:
        hint = " (divide 8-bit values by 255)" if high > 2.0 and low >= 0.0 else ""
        raise InputError(
            f"pixel values run from {low:.4g} to {high:.4g}; expected floats in [0, 1]{hint}"
        )


@dataclass(frozen=True)
class RunInfo:
    """How the last image was processed: ``tile`` is 0 for a single whole-image pass, and
    ``tiles`` is 0 when the model did not run (strength 0). ``runtime`` is what ran the
    model's passes: under runtime "auto" a whole image of a size not seen before runs on
    "torch" even where the path says "openvino" (``Restorer._run``)."""

    tiles: int
    tile: int
    overlap: int
    stats_replayed: bool
    runtime: str = "torch"
    #: A low-precision pass gave non-finite values and was computed again in fp32.
    recomputed_fp32: bool = False


class Restorer:
    """Restores images with one model on one device; ``path`` says how (device, precision, layout).

    ``tile=None`` tiles automatically above ``AUTO_TILE[device]`` pixels per side, ``tile=0``
    never tiles, ``tile=N`` (at least ``MIN_TILE``; rounded down to the model's multiple)
    tiles anything larger. A model with image-wide statistics restores an image no larger
    than the reference they are recorded on in one pass, tiled or not (``_one_pass``).
    ``overlap=None`` takes the model's ``tile_overlap_hint``. The model is moved to the device
    and layout and put in eval mode; ``precision="auto"`` may time it briefly once per
    machine (``anyrestore.compute``).
    ``runtime`` is "torch", "openvino" or "auto" (``anyrestore.compute.choose_path``); on
    OpenVINO the statistics of a tiled image are still recorded by the eager model.
    Threads may share a restorer or its model: restorations with one model take turns, and
    ``last_run`` describes the calling thread's latest restoration.
    """

    def __init__(
        self,
        model: RestorationModel,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int | None = None,
        *,
        tile_batch: int | None = None,
        stats_side: int | None = None,
        stats_method: Method = DEFAULT_STATS_METHOD,
        on_tile: Callable[[int, int], None] | None = None,
        runtime: str = "torch",
    ) -> None:
        if tile is not None and (tile < 0 or 0 < tile < MIN_TILE):
            raise UsageError(
                f"tile size must be 0 (no tiling) or at least {MIN_TILE} px, got {tile}"
            )
        if overlap is not None and overlap < 0:
            raise UsageError(f"tile overlap must be >= 0, got {overlap}")
        if tile_batch is not None and tile_batch < 0:
            raise UsageError(f"tile_batch must be >= 1 (0: the device's default), got {tile_batch}")
        if stats_side is not None and stats_side < 0:
            raise UsageError(f"stats_side must be > 0 (0: the default), got {stats_side}")
        if stats_method not in METHODS:
            raise UsageError(
                f"unknown stats method {stats_method!r}; use one of {', '.join(METHODS)}"
            )
        if not isinstance(model, torch.nn.Module):
            hint = (
                "; pass its .model"
                if isinstance(getattr(model, "model", None), torch.nn.Module)
                else ""
            )
            raise TypeError(
                f"Restorer takes a model (create_model or load_weights(...).model), "
                f"not {type(model).__name__}{hint}"
            )
        # Choosing the path may time the model and preparing it changes its layout: not
        # while another thread's tiled restoration replays statistics on it.
        self._lock = _lock_for(model)
        with self._lock:
            model.eval()
            self.path: ComputePath = choose_path(
                device, precision, model=model, runtime=runtime, kernel_scope=pointwise_kernel
            )
            self.model = prepare_model(model, self.path)
            #: What runs the passes OpenVINO does not (the statistics of a tiled image, a new
            #: size's first whole image under "auto"): eager PyTorch's own choice of precision
            #: and 1x1 kernel, which need not be OpenVINO's (eager bf16 can be slower than fp32).
            self._eager: ComputePath = self.path
            self._openvino: OpenVinoModel | None = None
            if self.path.runtime == "openvino":
                self._openvino = self._openvino_model()
                self._eager = choose_path(
                    self.path.device, precision, model=model, kernel_scope=pointwise_kernel
                )
                if self._openvino is None:
                    self.path = self._eager
        self.device = self.path.device
        self.precision = self.path.precision
        # With runtime "auto", a whole image of a size not seen before runs eager: compiling
        # OpenVINO for one small image costs more than it saves (docs/inference.md).
        self._openvino_always = self.path.runtime_asked
        self._sizes_seen: set[tuple[int, ...]] = set()
        self.pad_multiple = int(getattr(model, "pad_multiple", 1)) or 1
        self.tile = tile
        self.overlap = (
            overlap if overlap is not None else int(getattr(model, "tile_overlap_hint", 32))
        )
        self.tile_batch = tile_batch or (1 if self.device.type == "cpu" else 4)
        self.stats_side = stats_side or None  # 0 is the default, as None
        self._fp32_tiles = False  # tiles of an image whose statistics needed fp32
        self.stats_method = stats_method
        self.on_tile = on_tile
        self._runs = threading.local()  # last_run, per thread
        self._warned_fallback = False

    def _openvino_model(self) -> OpenVinoModel | None:
        """The model on OpenVINO; None where an OpenVINO that runtime "auto" picked (it
        imports) cannot start here, a broken install or a CPU plugin that fails."""
        from anyrestore.engine.openvino_runtime import OpenVinoModel

        try:
            return OpenVinoModel(self.model, self.path.precision)
        except UsageError:
            raise
        except Exception as exc:
            self._openvino_failed(exc, self.path.runtime_asked)
            return None

    @staticmethod
    def _openvino_failed(exc: Exception, asked: bool) -> None:
        """An asked-for OpenVINO that cannot run is an error; one ``auto`` picked, a warning."""
        if asked:
            raise UsageError(
                f"OpenVINO cannot run here ({first_line(exc)}); use --runtime torch"
            ) from None
        log.warning("OpenVINO cannot run here (%s); restoring with PyTorch", first_line(exc))

    def last_path(self) -> ComputePath:
        """The path this thread's latest restoration ran on: ``path``, or the eager path
        where none of its passes ran on OpenVINO (under runtime "auto", a new size)."""
        info = self.last_run
        return self._eager if info is not None and info.runtime == "torch" else self.path

    def describe(self) -> str:
        """The compute path in words ("cpu fp32 channels-last, 2 threads (why)"), as `fix`
        prints it; with OpenVINO, also what runs the passes it does not."""
        said = self.path.describe()
        if self._openvino is None:
            return said
        eager = self._eager
        precision = f"{eager.precision} " if eager.precision != self.path.precision else ""
        first = "" if self._openvino_always else "a new size's first whole image and "
        return f"{said}; {first}tiled statistics run {precision}on eager torch"

    @property
    def last_run(self) -> RunInfo | None:
        """How this thread's latest restoration ran; None before its first. Per thread, so
        that a web app's workers sharing a restorer each report their own image's tiling."""
        return getattr(self._runs, "info", None)

    @last_run.setter
    def last_run(self, info: RunInfo | None) -> None:
        self._runs.info = info

    @property
    def calls_to_settle(self) -> int:
        """Calls on one image size before a call takes the path later ones will: 2 where
        runtime "auto" restores a size's first whole image eager and compiles on the second."""
        return 2 if self._openvino is not None and not self._openvino_always else 1

    # -- public API ---------------------------------------------------------------------

    # no_grad, not inference_mode: what comes back is the caller's to scale in place or feed
    # to autograd, which an inference tensor refuses.
    @torch.no_grad()
    def restore_tensor(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Restore a float (3,h,w) or (b,3,h,w) CPU tensor in [0, 1]; same shape back, on the CPU.

        ``strength`` in [0, 1] moves the result from the input (0) to the model's output (1):
        at 0.5 half of the noise or haze the model took away comes back; at 0 the model does
        not run (``last_run.tiles`` is 0).
        """
        check_strength(strength)
        if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"expected a (3,h,w) or (b,3,h,w) RGB tensor, got {shape}")
        check_pixels(x)
        if strength == 0.0:  # the photo as it was: the model's output would be mixed away
            self.last_run = RunInfo(0, 0, 0, False)
            # One copy, converted or not: the caller's tensor stays its own.
            return x.to("cpu", torch.float32, copy=True)
        single = x.dim() == 3
        batch = (x[None] if single else x).to("cpu", torch.float32)
        with self._lock:  # one restoration at a time per model: see _lock_for
            # A model its owner has put back in training mode (a preview between training
            # steps) would normalise with each tile's statistics, overwrite its BatchNorm
            # running averages and route with noise: restore in eval, then leave it as it was.
            training = self.model.training
            self.model.eval()
            try:
                out = self._restore_batch(batch)
            finally:
                self.model.train(training)
        # A sum spreads any NaN without a mask the size of the image (the clamp in _forward
        # keeps NaN as NaN).
        if not math.isfinite(float(out.sum())):
            raise NonFiniteOutput(
                "the model produced NaN or infinite pixels; the weights are damaged or "
                "overflow at this precision (try fp32)"
            )
        if strength != 1.0:
            # In place: a 12 MP photo's extra float copy is 144 MB. The input may stray a
            # little outside [0, 1] (check_pixels allows it), the mix may not (strength 0
            # returned the input above, without the model).
            out.lerp_(batch, 1.0 - strength).clamp_(0.0, 1.0)
        return out[0] if single else out

    def restore_image(self, image: ImageData, strength: float = 1.0) -> ImageData:
        """Restore an image's RGB; alpha, bit depth, colour profile and metadata carry over."""
        if not isinstance(image, ImageData):
            raise TypeError(
                f"restore_image takes an ImageData (read_image's result), not "
                f"{type(image).__name__}; anyrestore.restore takes arrays and PIL images"
            )
        x = torch.from_numpy(np.ascontiguousarray(image.rgb)).permute(2, 0, 1)
        y = self.restore_tensor(x, strength)
        return image.with_rgb(y.permute(1, 2, 0).numpy())

    # -- internals ----------------------------------------------------------------------

    def _restore_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's restoration of a (b,3,h,w) CPU batch: whole, or tiled with OOM retry."""
        h, w = batch.shape[-2:]
        tile = self._initial_tile(h, w)
        stats_side = self._stats_side(tile)
        tile_batch = self.tile_batch
        cap = 0  # after an out-of-memory error: the largest side any one pass may have
        self._runs.runtime = "torch"  # until a pass runs on OpenVINO (_run)
        self._runs.recomputed = False  # until a pass is redone in fp32 (_forward)
        while True:
            whole = self._one_pass(h, w, tile, stats_side, cap)
            try:
                if whole:
                    out = self._forward(batch)
                    self.last_run = RunInfo(
                        1, 0, 0, False, self._runs.runtime, self._runs.recomputed
                    )
                else:
                    parts = [
                        self._restore_tiled(img[None], tile, stats_side, tile_batch, cap)
                        for img in batch
                    ]
                    # One image (every photo): no second full-size copy from cat
                    out = parts[0] if len(parts) == 1 else torch.cat(parts)
                break
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if self._openvino is not None:
                    self._openvino.release()  # compiled sizes hold their activation memory
                empty_cache(self.device)
                if tile_batch > 1 and not whole:  # a whole-image pass batches no tiles
                    tile_batch = 1
                    log.warning(
                        "out of memory on %s; retrying with one tile per batch", self.device
                    )
                    continue
                # The largest pass that ran out (the whole image, or the reference the tiles'
                # statistics are recorded on) must shrink too, or it fails again as it was.
                largest = max(h, w) if whole else self._largest_pass(stats_side, tile, cap)
                cap = max(self.pad_multiple, largest // 2 // self.pad_multiple * self.pad_multiple)
                current = tile if tile and tile < max(h, w) else max(h, w)
                smaller = (current // 2) // self.pad_multiple * self.pad_multiple
                if smaller < max(MIN_TILE, self.pad_multiple):
                    advice = (
                        "close other programs or use a machine with more memory"
                        if self.device.type == "cpu"
                        else "try --device cpu or a smaller model"
                    )
                    raise DeviceError(
                        f"out of memory on {self.device} even with {current}px tiles "
                        f"({first_line(exc)}); {advice}"
                    ) from None
                log.warning(
                    "out of memory on %s with %dpx tiles; retrying with %dpx",
                    self.device,
                    current,
                    smaller,
                )
                tile, stats_side = smaller, min(stats_side, smaller)
        return out

    def _initial_tile(self, h: int, w: int) -> int:
        tile = AUTO_TILE.get(self.device.type, 512) if self.tile is None else self.tile
        if tile == 0:
            return 0
        return max(self.pad_multiple, tile // self.pad_multiple * self.pad_multiple)

    def _run(self, x: torch.Tensor, tile: bool) -> tuple[torch.Tensor, str]:
        """The model's pass and the precision it ran at: on OpenVINO for tiles, asked-for
        OpenVINO, or a size seen before; eager otherwise."""
        openvino = self._openvino
        if self._fp32_tiles:  # inside frozen_global_stats' fp32 block (autocast is off)
            return self.model(x), "fp32"
        if openvino is None:
            return self.model(x), self._eager.precision
        size = tuple(x.shape)
        if tile or self._openvino_always or size in self._sizes_seen:
            try:
                out = openvino(x)
            except Exception as exc:  # e.g. a CPU plugin that fails only when compiling
                if is_out_of_memory(exc):
                    raise
                self._drop_openvino(exc)
                return self.model(x), self._eager.precision
            self._runs.runtime = "openvino"
            return out, self.path.precision
        self._sizes_seen.add(size)
        return self.model(x), self._eager.precision

    def _drop_openvino(self, exc: Exception) -> None:
        """Go on with eager PyTorch after OpenVINO failed to compile or run a graph, where
        ``auto`` picked it; an asked-for OpenVINO is an error."""
        self._openvino_failed(exc, self._openvino_always)
        self._openvino = None
        self.path = self._eager
        self.precision = self._eager.precision

    @contextmanager
    def _forward_context(self) -> Iterator[None]:
        """Autocast at the eager path's precision and its 1x1 kernel, around a forward pass
        (OpenVINO's graphs are converted without either); no autocast while the tiles of an
        image whose statistics overflowed run in fp32."""
        cast = self._eager.autocast() if not self._fp32_tiles else nullcontext()
        with cast, pointwise_kernel(self._eager.pointwise):
            yield

    def _forward(self, x: torch.Tensor, tile: bool = False) -> torch.Tensor:
        """One device pass on a CPU batch (the model pads and crops), clamped, back to the CPU."""
        h, w = x.shape[-2:]
        inp = x.to(self.device)
        if self.path.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with self._forward_context():
            out, precision = self._run(inp, tile)
        out = out[..., :h, :w].float()
        if precision != "fp32" and not bool(torch.isfinite(out).all()):
            # fp16 can overflow inside a network trained in fp32; redo this pass in fp32.
            self._note_fp32_recompute(precision)
            with torch.autocast(self.device.type, enabled=False):
                out = self.model(inp.float())[..., :h, :w].float()
        return out.clamp_(0.0, 1.0).cpu()

    def _note_fp32_recompute(self, precision: str) -> None:
        if not self._warned_fallback:
            log.warning("%s produced non-finite values; recomputing in fp32", precision)
            self._warned_fallback = True
        self._runs.recomputed = True

    def _restore_tiled(
        self, x: torch.Tensor, tile: int, stats_side: int, tile_batch: int, cap: int = 0
    ) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.pad_multiple
        # Overlap on the model's grid too: rounded up to the multiple, at most half a tile.
        overlap = min(-(-self.overlap // m) * m, tile // 2 // m * m)
        grid = TileGrid.build(h + (-h) % m, w + (-w) % m, tile, overlap)
        replay = self._replays()
        frozen = nullcontext()
        forward: Callable[[torch.Tensor], torch.Tensor] = partial(self._forward, tile=True)
        if replay:
            side = self._reference_side(stats_side, tile, cap)
            reference = make_reference(x, side, self.stats_method)
            reference = reference.to(self.device)
            # Enter the path's forward context first so the recording pass runs as the tiles do.
            frozen = frozen_global_stats(self.model, reference)
            scale = reference_scale((h, w), side, self.stats_method)
            forward = self._placed_forward(grid, scale)
        with self._forward_context(), frozen as in_fp32:
            if in_fp32:  # statistics recorded again in fp32: so is every tile then
                self._note_fp32_recompute(self.path.precision)
            self._fp32_tiles = in_fp32
            try:
                out = run_tiled(x, forward, tile, overlap, tile_batch, self.on_tile, m)
            finally:
                self._fp32_tiles = False
        self.last_run = RunInfo(
            len(grid), tile, overlap, replay, self._runs.runtime, self._runs.recomputed
        )
        return out.clamp_(0.0, 1.0)  # blended overlaps can round a hair past the tiles' range

    def _replays(self) -> bool:
        """Whether tiles replay image-wide statistics recorded on a reference first."""
        return self.stats_method != "live" and has_global_stats(self.model)

    def _one_pass(self, h: int, w: int, tile: int, stats_side: int, cap: int = 0) -> bool:
        """Whether an h x w image is restored in one whole-image pass rather than in tiles.

        Also when it exceeds the tile but not the side the statistics are recorded on: that
        recording pass is the whole-image pass, which peaks higher than any tile, and its
        output is the answer the tiles would only reproduce. An explicit ``stats_side`` still
        tiles: that is how tiling is measured against the whole image.
        """
        if cap and max(h, w) > cap:
            return False
        if tile == 0 or (h <= tile and w <= tile):
            return True
        return (
            self.stats_side is None
            and self._replays()
            and max(h, w) <= self._reference_side(stats_side, tile, cap)
        )

    def reference_side(self, tile: int) -> int:
        """The most pixels a side of the downscaled copy may have on which a restoration in
        ``tile`` px tiles records its image-wide statistics (an image no larger is restored in
        one pass when ``stats_side`` is left to the engine)."""
        return self._reference_side(self._stats_side(tile), tile)

    def _stats_side(self, tile: int) -> int:
        return self.stats_side or min(DEFAULT_STATS_SIDE, max(MIN_STATS_SIDE, tile))

    def _reference_side(self, stats_side: int, tile: int, cap: int = 0) -> int:
        """The model's ``reference_side`` when it asks for more (at most 4 tiles a side), and
        at most ``cap`` once a pass ran out of memory."""
        wanted = int(getattr(self.model, "reference_side", 0))
        if self.stats_side is not None or wanted <= stats_side:
            side = stats_side
        else:
            side = max(stats_side, min(wanted, 4 * tile))
        return min(side, cap) if cap else side

    def _largest_pass(self, stats_side: int, tile: int, cap: int) -> int:
        """The largest side a tiled restoration runs the model on: a tile or the reference."""
        if not self._replays():
            return tile
        return max(tile, self._reference_side(stats_side, tile, cap))

    def _placed_forward(
        self, grid: TileGrid, scale: tuple[float, float] | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``_forward`` that first tells the model's global maps where its tiles lie.

        ``run_tiled`` visits ``grid.positions()`` in order, a batch of tiles per call.
        """
        positions = iter(grid.positions())
        size = (grid.height, grid.width)

        def forward(tiles: torch.Tensor) -> torch.Tensor:
            windows = [(y, x, grid.tile_h, grid.tile_w) for y, x in islice(positions, len(tiles))]
            set_tile_windows(self.model, windows, size, scale)
            return self._forward(tiles, tile=True)

        return forward
