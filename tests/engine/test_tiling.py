"""Tiling geometry, blending windows, tiled == whole for a local model, OOM retry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.engine import Restorer
from anyrestore.engine.reference import METHODS, make_reference
from anyrestore.engine.tiling import TileGrid, pad_to_size, run_tiled, tile_starts, window_1d
from anyrestore.errors import DeviceError
from anyrestore.models.base import RestorationModel
from anyrestore.models.layers.padding import pad_to_multiple


class LocalConv(RestorationModel):
    """Three 3x3 convs: receptive-field radius 3, no global statistics."""

    arch = "test_local_conv"
    tile_overlap_hint = 16

    def __init__(self, pad_multiple: int = 1) -> None:
        super().__init__()
        self.pad_multiple = pad_multiple  # type: ignore[misc]
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor:
        # The model contract: any size in, padded to the multiple inside, cropped back.
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        return (x + 0.2 * self.net(x))[..., :h, :w]


@pytest.mark.parametrize(
    "size,tile,overlap", [(56, 24, 12), (57, 32, 16), (100, 40, 20), (30, 24, 12)]
)
def test_tiles_cover_the_axis_and_end_at_its_edge(size: int, tile: int, overlap: int) -> None:
    starts = tile_starts(size, tile, overlap)
    length = min(tile, size)
    assert starts[0] == 0 and starts[-1] + length == size
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0 < g <= tile - overlap for g in gaps)  # neighbours overlap by >= overlap


def test_windows_of_two_neighbours_sum_to_one_over_the_overlap() -> None:
    tile, overlap = 32, 16
    left = window_1d(tile, overlap, lead=False, trail=True)
    right = window_1d(tile, overlap, lead=True, trail=False)
    total = left[tile - overlap :] + right[:overlap]
    assert torch.allclose(total, torch.ones(overlap, dtype=total.dtype))
    assert left[0] == 1 and right[-1] == 1  # image borders are not faded
    assert right[: overlap // 4].abs().max() == 0  # the least-context pixels are never used


def test_summed_window_is_positive_everywhere() -> None:
    grid = TileGrid.build(100, 77, 32, 16)
    sum_y, sum_x = grid.weight_sums()
    assert sum_y.min() > 0.99 and sum_x.min() > 0.99


@pytest.mark.parametrize("tile,overlap,batch", [(32, 12, 1), (32, 16, 3), (40, 12, 2)])
def test_tiled_equals_whole_image_when_the_receptive_field_fits_the_overlap(
    tile: int, overlap: int, batch: int
) -> None:
    model = LocalConv()
    x = torch.rand(3, 72, 100, generator=torch.Generator().manual_seed(1))
    whole = Restorer(model, "cpu", tile=0).restore_tensor(x)
    restorer = Restorer(model, "cpu", tile=tile, overlap=overlap, tile_batch=batch)
    tiled = restorer.restore_tensor(x)
    assert restorer.last_run is not None and restorer.last_run.tiles > 4
    assert (tiled - whole).abs().max() < 1e-4


def test_padding_to_the_models_multiple_is_undone() -> None:
    model = LocalConv(pad_multiple=8)
    x = torch.rand(2, 3, 37, 53)
    out = Restorer(model, "cpu", tile=0).restore_tensor(x)
    assert out.shape == x.shape
    with torch.no_grad():  # the model's own output, not a crop from the wrong corner
        torch.testing.assert_close(out, model(x).clamp(0, 1), rtol=0, atol=1e-5)
    tiled = Restorer(model, "cpu", tile=32, overlap=12).restore_tensor(x)
    assert tiled.shape == x.shape
    assert (tiled - out).abs().max() < 1e-4


class BlockMixer(RestorationModel):
    """Mixes each 4x4 block (pixel-unshuffle, 1x1 conv, shuffle): exact only on the 4-pixel grid."""

    arch = "test_block_mixer"
    pad_multiple = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = nn.Conv2d(48, 48, 1)

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 4)
        return torch.sigmoid(F.pixel_shuffle(self.mix(F.pixel_unshuffle(x, 4)), 4))[..., :h, :w]


def test_tiles_sit_on_the_models_grid_and_edge_tiles_are_padded_like_the_whole_image() -> None:
    x = torch.rand(3, 41, 57, generator=torch.Generator().manual_seed(2))  # not multiples of 4
    model = BlockMixer()
    whole = Restorer(model, "cpu", tile=0).restore_tensor(x)
    restorer = Restorer(model, "cpu", tile=32, overlap=6)  # overlap rounds up to 8
    tiled = restorer.restore_tensor(x)
    assert restorer.last_run is not None and restorer.last_run.overlap == 8
    assert (tiled - whole).abs().max() < 1e-5


def test_pad_to_size_reflects_and_handles_tiny_images() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    padded = pad_to_size(x, 4, 4)
    assert padded.shape == (1, 1, 4, 4)
    assert torch.equal(padded[0, 0, 3], x[0, 0, 1])  # reflect: row 3 mirrors row 1
    tiny = pad_to_size(torch.rand(1, 3, 2, 2), 8, 8)  # too small to reflect
    assert tiny.shape == (1, 3, 8, 8)


def test_run_tiled_calls_forward_on_tile_sized_batches_only() -> None:
    seen = []

    def forward(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t

    x = torch.rand(1, 3, 50, 70)
    out = run_tiled(x, forward, tile=32, overlap=8, batch=2)
    assert torch.allclose(out, x, atol=1e-6)  # identity model: blending is exact
    assert all(s[0] <= 2 and s[-2:] == (32, 32) for s in seen)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "live"])
def test_stats_reference_is_bounded(method: str) -> None:
    x = torch.rand(1, 3, 300, 500)
    ref = make_reference(x, 128, method)  # type: ignore[arg-type]
    assert max(ref.shape[-2:]) <= 128 and min(ref.shape[-2:]) >= 32
    small = torch.rand(1, 3, 60, 90)
    assert make_reference(small, 128, method) is small  # small images: exact statistics


@pytest.mark.parametrize("method", [m for m in METHODS if m != "live"])
@pytest.mark.parametrize("size", [(1, 3000), (2, 5000), (4000, 1)])
def test_a_reference_of_a_thin_image_keeps_a_row_and_a_column(
    method: str, size: tuple[int, int]
) -> None:
    ref = make_reference(torch.rand(1, 3, *size), 1024, method)  # type: ignore[arg-type]
    assert min(ref.shape[-2:]) >= 1 and max(ref.shape[-2:]) <= 1024


def test_a_one_pixel_high_panorama_is_restored_in_tiles() -> None:
    from tinymodels import TINY_ANYIR

    from anyrestore.models import create_model

    torch.manual_seed(0)
    r = Restorer(create_model("anyir_t", **TINY_ANYIR).eval(), "cpu", "fp32", tile=64)
    out = r.restore_tensor(torch.rand(3, 1, 800))
    assert r.last_run is not None and r.last_run.tiles > 1
    assert out.shape == (3, 1, 800) and torch.isfinite(out).all()


def test_tiled_output_stays_in_range_where_tiles_overlap() -> None:
    # Each tile is clamped to [0, 1]; blending two 1.0s and dividing by the summed window
    # rounded to 1.0000001, a value a whole-image pass never returns.
    class White(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones_like(x)

    r = Restorer(White(), "cpu", "fp32", tile=64, overlap=16)
    out = r.restore_tensor(torch.rand(3, 200, 170))
    assert r.last_run is not None and r.last_run.tiles > 1
    assert float(out.max()) <= 1.0 and torch.allclose(out, torch.ones_like(out), atol=1e-6)


@pytest.mark.parametrize("width, error", [(3000, 0.0), (4000, 0.5)])
def test_a_map_recorded_on_the_strided_reference_lands_where_it_was_taken(
    width: int, error: float
) -> None:
    # ClusIR replays image-wide feature maps cropped to each tile: a map recorded on every
    # k-th pixel and resampled back must not be shifted (once it was, by (k-1)/2 pixels).
    from anyrestore.engine.reference import reference_scale
    from anyrestore.models.layers.globalstats import (
        GlobalMap,
        set_global_mode,
        set_tile_windows,
    )

    class Passthrough(nn.Module):  # the map is the input itself
        def __init__(self) -> None:
            super().__init__()
            self.map = GlobalMap()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.map(lambda: x, x)

    ramp = torch.arange(width, dtype=torch.float32).expand(1, 1, 64, width).clone()
    model = Passthrough()
    set_global_mode(model, "record")
    model(make_reference(ramp, 1024, "stride"))
    set_global_mode(model, "replay")
    scale = reference_scale((64, width), 1024, "stride")
    assert scale == ((3.0, 3.0) if width == 3000 else (4.0, 4.0))
    set_tile_windows(model, [(0, 1000, 64, 512)], (64, width), scale)
    tile = ramp[..., 1000:1512]
    offset = float((model(tile) - tile)[..., 8:-8].mean())  # bilinear is exact on a ramp
    assert abs(abs(offset) - error) < 1e-3


class OOMAbove(LocalConv):
    """Raises ``error`` (CUDA-style out-of-memory) for inputs larger than ``limit`` pixels."""

    def __init__(self, limit: int, error: Exception | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.error = error or torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        if x.shape[0] * x.shape[-1] * x.shape[-2] > self.limit:
            raise self.error
        return super().forward(x)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory (simulated)"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"),
        RuntimeError(  # OpenVINO's CPU plugin
            "Exception from src/plugins/intel_cpu/src/cpu_memory.cpp:257:\n"
            "Failed to allocate 14495514624 bytes of memory"
        ),
        RuntimeError("std::bad_alloc"),
        RuntimeError(  # Apple's GPU: not an OutOfMemoryError
            "MPS backend out of memory (MPS allocated: 17.2 GiB, other allocations: 1.1 GiB, "
            "max allowed: 18.1 GiB). Tried to allocate 256.00 MiB on private pool."
        ),
    ],
    ids=["cuda", "torch-cpu", "openvino", "bad_alloc", "mps"],
)
def test_out_of_memory_halves_the_tile_and_retries(error: Exception) -> None:
    model = OOMAbove(limit=40 * 40, error=error)
    x = torch.rand(3, 64, 80)
    restorer = Restorer(model, "cpu", tile=0, overlap=8)
    out = restorer.restore_tensor(x)
    assert out.shape == x.shape
    assert restorer.last_run is not None and restorer.last_run.tile == 40  # 80 -> 40
    expected = Restorer(LocalConv(), "cpu", tile=40, overlap=8).restore_tensor(x)
    assert (out - expected).abs().max() < 1e-5


@pytest.mark.parametrize("tile_batch", [1, 4])  # 4: the GPU default
def test_a_whole_image_pass_that_ran_out_of_memory_is_not_run_again(tile_batch: int) -> None:
    # AnyIR records image-wide statistics on a reference of up to 1024 px (4 tiles a side):
    # after the whole 400 px image ran out, halving the tile alone left that pass as it was.
    from tinymodels import TINY_ANYIR

    from anyrestore.models import create_model

    torch.manual_seed(0)
    model = create_model("anyir_t", **TINY_ANYIR).eval()
    sizes: list[tuple[int, int]] = []
    forward = model.forward

    def limited(x: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(tuple(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > 300 * 300:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(x, *args, **kwargs)

    model.forward = limited  # type: ignore[method-assign]
    restorer = Restorer(model, "cpu", tile=256, tile_batch=tile_batch)
    out = restorer.restore_tensor(torch.rand(3, 400, 400))
    assert out.shape == (3, 400, 400) and torch.isfinite(out).all()
    assert sizes.count((400, 400)) == 1  # tried once, then tiled with a smaller reference
    assert restorer.last_run is not None and restorer.last_run.tile == 128
    assert max(max(size) for size in sizes[1:]) <= 200


def test_out_of_memory_at_the_smallest_tile_is_a_device_error() -> None:
    cpu_oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"
    )
    restorer = Restorer(OOMAbove(limit=10, error=cpu_oom), "cpu", tile=64, overlap=8)
    with pytest.raises(DeviceError, match="out of memory") as caught:
        restorer.restore_tensor(torch.rand(3, 70, 70))
    # The allocator's own words stay (how much it wanted), and the advice fits the device:
    # on the CPU, "try --device cpu" would send the user where they already are.
    said = str(caught.value)
    assert "DefaultCPUAllocator: not enough memory" in said
    assert "--device cpu" not in said and "more memory" in said


def test_other_runtime_errors_are_not_taken_for_out_of_memory() -> None:
    model = OOMAbove(limit=10, error=RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes"):
        Restorer(model, "cpu", tile=64, overlap=8).restore_tensor(torch.rand(3, 70, 70))
    assert len(model.sizes) == 1  # no retry with smaller tiles
