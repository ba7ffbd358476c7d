"""The public restore API, device errors, and AnyIR tiled vs whole with replay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tinymodels import TINY_ANYIR as TINY

from anyrestore.engine import Restorer, resolve_device
from anyrestore.engine import restorer as restorer_module
from anyrestore.engine.restorer import RunInfo
from anyrestore.errors import DeviceError, InputError, UsageError
from anyrestore.models import create_model
from anyrestore.models.layers.globalstats import GlobalStat

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def tiny_anyir(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("anyir_t", **TINY)


def noisy_photo(seed: int, h: int, w: int) -> torch.Tensor:
    """Smooth colour regions plus Gaussian noise: a stand-in for a noisy photo."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(
        torch.rand(1, 3, 5, 7, generator=g), size=(h, w), mode="bicubic", align_corners=False
    )
    return (base + 0.06 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_strength_mixes_the_restoration_with_the_input() -> None:
    restorer = Restorer(tiny_anyir(), "cpu", "fp32")
    x = noisy_photo(0, 24, 40)
    full = restorer.restore_tensor(x)
    assert torch.equal(restorer.restore_tensor(x, strength=0.0), x)  # the photo as it was
    half = restorer.restore_tensor(x, strength=0.5)
    assert torch.allclose(half, (x + full) / 2, atol=1e-6)
    assert psnr(half, x) > psnr(full, x)  # less of the model's change


def test_a_partial_strength_stays_in_range_for_inputs_just_outside_it() -> None:
    # Inputs a little outside [0, 1] are accepted (float rounding of converted photos): the
    # mix with them left the range, which the restoration itself never does.
    restorer = Restorer(tiny_anyir(), "cpu", "fp32")
    x = noisy_photo(0, 24, 40)
    x[:, :4] = 1.005
    x[:, -4:] = -0.005
    out = restorer.restore_tensor(x, strength=0.3)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_strength_zero_returns_a_copy_of_the_photo_without_running_the_model() -> None:
    model = tiny_anyir()
    calls: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    restorer = Restorer(model, "cpu", "fp32")
    x = noisy_photo(0, 24, 40)
    out = restorer.restore_tensor(x, strength=0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()  # the caller's x stays its own
    assert calls == [] and restorer.last_run is not None and restorer.last_run.tiles == 0
    x64 = x[None].double()  # a batch in another dtype comes back as a float32 batch
    out = restorer.restore_tensor(x64, strength=0.0)
    assert out.dtype == torch.float32 and out.shape == x64.shape and torch.equal(out[0], x)
    restorer.restore_tensor(x, strength=0.01)
    assert calls and restorer.last_run.tiles == 1


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_zero_to_one_is_refused(strength: float) -> None:
    restorer = Restorer(tiny_anyir(), "cpu", "fp32")
    with pytest.raises(UsageError, match="strength must be a number from 0 to 1"):
        restorer.restore_tensor(noisy_photo(0, 8, 8), strength=strength)


@pytest.mark.parametrize(
    ("option", "message"),
    [({"tile_batch": -1}, "tile_batch must be >= 1"), ({"stats_side": -1}, "stats_side must")],
)
def test_negative_tile_options_are_refused(option: dict, message: str) -> None:
    # tile_batch -1 ran no tile at all (a black picture); stats_side -1 mirrored the reference.
    with pytest.raises(UsageError, match=message):
        Restorer(tiny_anyir(), "cpu", "fp32", tile=64, **option)


@pytest.mark.skipif(not (NO_CUDA and NO_MPS), reason="an accelerator is present")
def test_auto_device_falls_back_to_cpu_and_reports_it() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    restorer = Restorer(tiny_anyir(), "auto")
    assert restorer.device == torch.device("cpu") and restorer.precision == "fp32"
    threads = torch.get_num_threads()
    plural = "s" if threads != 1 else ""
    assert restorer.describe().startswith(f"cpu fp32 channels-last, {threads} thread{plural} (")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu0", ""])
def test_unknown_device_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device(name)


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is present")
def test_missing_cuda_fails_loudly() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        Restorer(tiny_anyir(), "cuda:0")


@pytest.mark.skipif(not NO_MPS, reason="MPS is present")
def test_missing_mps_fails_loudly() -> None:
    with pytest.raises(DeviceError, match="MPS is not available"):
        resolve_device("mps")


def test_fp16_on_cpu_is_refused_and_bf16_only_when_asked() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(UsageError, match="fp16 is not supported on the CPU"):
        Restorer(tiny_anyir(), "cpu", "fp16")
    assert Restorer(tiny_anyir(), cpu, "auto").precision == "fp32"
    with pytest.raises(UsageError, match="unknown precision"):
        Restorer(tiny_anyir(), cpu, "fp64")
    model = tiny_anyir()
    x = noisy_photo(0, 24, 32)
    fp32 = Restorer(model, "cpu", "fp32").restore_tensor(x)
    bf16 = Restorer(model, "cpu", "bf16")
    assert bf16.precision == "bf16"
    assert (bf16.restore_tensor(x) - fp32).abs().max() < 0.05


def test_restore_tensor_keeps_shape_range_and_stays_on_cpu() -> None:
    restorer = Restorer(tiny_anyir(), "cpu")
    single = restorer.restore_tensor(torch.rand(3, 21, 30))
    assert single.shape == (3, 21, 30) and single.device.type == "cpu"
    batch = restorer.restore_tensor(torch.rand(2, 3, 21, 30))
    assert batch.shape == (2, 3, 21, 30)
    assert batch.min() >= 0 and batch.max() <= 1
    with pytest.raises(InputError, match="RGB tensor"):
        restorer.restore_tensor(torch.rand(4, 21, 30))


def test_what_comes_back_is_an_ordinary_tensor_to_scale_or_differentiate() -> None:
    restorer = Restorer(tiny_anyir(), "cpu", "fp32")
    for strength in (1.0, 0.5, 0.0):
        out = restorer.restore_tensor(torch.rand(3, 16, 16), strength)
        out.mul_(255)  # an inference tensor refuses in-place updates outside inference mode
        assert not out.is_inference()


def test_a_model_put_back_in_training_mode_restores_as_in_eval_and_keeps_its_mode() -> None:
    # A preview between training steps: BatchNorm must not normalise with the photo's own
    # statistics nor overwrite its running averages; the owner's mode comes back.
    model = tiny_anyir()
    restorer = Restorer(model, "cpu", "fp32")
    photo = noisy_photo(1, 24, 32)
    in_eval = restorer.restore_tensor(photo)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert buffers  # the tiny anyir has BatchNorms whose averages a training pass would move
    model.train()
    assert torch.equal(restorer.restore_tensor(photo), in_eval)
    assert model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())


def test_auto_tiling_above_the_threshold_and_tile_zero_disables_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(restorer_module.AUTO_TILE, "cpu", 32)
    model = tiny_anyir()
    x = torch.rand(3, 40, 56)
    auto = Restorer(model, "cpu", overlap=8, stats_side=16)
    auto.restore_tensor(x)
    assert auto.last_run is not None and auto.last_run.tiles > 1 and auto.last_run.tile == 32
    small = Restorer(model, "cpu", overlap=8)
    small.restore_tensor(torch.rand(3, 24, 32))
    assert small.last_run is not None and small.last_run.tiles == 1
    off = Restorer(model, "cpu", tile=0)
    off.restore_tensor(x)
    assert off.last_run is not None and off.last_run.tiles == 1 and off.last_run.tile == 0
    for tile in (-1, 1, 31):  # a tile too small for any context is refused, not run
        with pytest.raises(UsageError, match="at least 32 px"):
            Restorer(model, "cpu", tile=tile)
    assert Restorer(model, "cpu", tile=32).tile == 32


def test_an_image_within_the_statistics_reference_is_restored_in_one_pass() -> None:
    # Above the tile size but within the side the model records its statistics on: that
    # recording pass is the whole-image pass, so its output is returned and no tile runs.
    model = tiny_anyir(0)
    x = noisy_photo(0, 96, 128)
    whole = Restorer(model, "cpu", tile=0).restore_tensor(x)
    tiles_seen: list[int] = []
    auto = Restorer(model, "cpu", tile=64, overlap=32, on_tile=lambda i, n: tiles_seen.append(n))
    out = auto.restore_tensor(x)
    assert auto.last_run is not None and auto.last_run.tiles == 1 and auto.last_run.tile == 0
    assert not tiles_seen
    torch.testing.assert_close(out, whole, rtol=0, atol=0)


def test_reference_side_is_the_side_a_tiled_restoration_records_statistics_on() -> None:
    # Benchmarks measure tiling against this side; it must be what the engine really runs.
    model = tiny_anyir(0)
    sides: list[int] = []
    forward = model.forward

    def recording(x: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        sides.append(max(x.shape[-2:]))
        return forward(x, *args, **kwargs)

    model.forward = recording  # type: ignore[method-assign]
    # The model asks for 1024 px; the engine gives it at most 4 tiles a side.
    for kwargs, expected in [({}, 4 * 96), ({"stats_side": 0}, 4 * 96), ({"stats_side": 300}, 300)]:
        restorer = Restorer(model, "cpu", "fp32", tile=96, overlap=8, stats_method="area", **kwargs)
        sides.clear()
        restorer.restore_tensor(noisy_photo(0, 400, 448))
        assert restorer.reference_side(96) == expected
        assert restorer.last_run is not None and restorer.last_run.tiles > 1
        assert sides[0] == expected and max(sides[1:]) == 96


def test_anyir_tiled_with_replayed_statistics_is_close_to_whole_image() -> None:
    # Measured (seed 0, 96x128, 6 tiles of 64 with overlap 32): replay 59.2 dB, live 47.9 dB;
    # seeds 0-3 gave 53.5-65.0 dB with replay and 42.7-48.7 dB without (docs/inference.md).
    model = tiny_anyir(0)
    x = noisy_photo(0, 96, 128)
    whole = Restorer(model, "cpu", tile=0).restore_tensor(x)
    replay = Restorer(model, "cpu", tile=64, overlap=32, stats_side=128)
    tiled = replay.restore_tensor(x)
    live = Restorer(model, "cpu", tile=64, overlap=32, stats_method="live").restore_tensor(x)
    assert (
        replay.last_run is not None
        and replay.last_run.stats_replayed
        and replay.last_run.tiles == 6
    )
    assert psnr(tiled, whole) > 55.0
    assert psnr(tiled, whole) > psnr(live, whole) + 5.0
    # the model is left computing its statistics live again
    assert all(m.mode == "live" for m in model.modules() if isinstance(m, GlobalStat))


def test_two_threads_sharing_a_model_get_their_own_images_statistics() -> None:
    """An app's thread pool restoring two large photos at once with one model (as
    ``anyrestore.restore`` shares it): each tiled result is the one it gets alone."""
    import threading

    model = tiny_anyir(0)
    dark, bright = noisy_photo(1, 96, 128) * 0.3, 0.5 + 0.5 * noisy_photo(2, 96, 128)
    alone = [
        Restorer(model, "cpu", "fp32", tile=64, overlap=16, stats_side=32).restore_tensor(img)
        for img in (dark, bright)
    ]
    first_in_tiles, second_ran_a_tile = threading.Event(), threading.Event()

    def on_tile(done: int, total: int) -> None:
        # The first image's thread waits after its first tile until the second image's thread
        # has recorded its statistics and run a tile. The model lock lets one restoration run
        # at a time, so today that wait runs out (2 s) and the second starts after the first;
        # without the lock the two would interleave here, and cross-talk would show below.
        if threading.current_thread().name == "first":
            if done == 1:
                first_in_tiles.set()
                second_ran_a_tile.wait(2.0)
        else:
            second_ran_a_tile.set()

    restorer = Restorer(model, "cpu", "fp32", tile=64, overlap=16, stats_side=32, on_tile=on_tile)
    results: dict[str, torch.Tensor] = {}
    runs: dict[str, RunInfo | None] = {}

    def run(name: str, img: torch.Tensor) -> None:
        results[name] = restorer.restore_tensor(img)
        runs[name] = restorer.last_run

    first = threading.Thread(target=run, args=("first", dark), name="first")
    first.start()
    assert first_in_tiles.wait(60)
    second = threading.Thread(target=run, args=("second", bright), name="second")
    second.start()
    first.join()
    second.join()
    assert all(info is not None and info.tiles > 1 for info in runs.values()), runs
    torch.testing.assert_close(results["first"], alone[0], rtol=0, atol=0)
    torch.testing.assert_close(results["second"], alone[1], rtol=0, atol=0)


def test_a_restorer_made_while_another_thread_restores_waits_for_its_tiles() -> None:
    """Making a Restorer prepares the shared model (and may time it): not in the middle of
    another thread's tiles, which replay statistics on that model."""
    import threading

    model = tiny_anyir(0)
    in_tiles, go_on, made = threading.Event(), threading.Event(), threading.Event()

    def on_tile(done: int, total: int) -> None:
        if done == 1:
            in_tiles.set()
            go_on.wait(10.0)

    busy = Restorer(model, "cpu", "fp32", tile=64, overlap=16, stats_side=32, on_tile=on_tile)
    worker = threading.Thread(target=busy.restore_tensor, args=(noisy_photo(1, 96, 128),))
    worker.start()
    assert in_tiles.wait(60)
    maker = threading.Thread(target=lambda: (Restorer(model, "cpu", "fp32"), made.set()))
    maker.start()
    waited = not made.wait(1.0)
    go_on.set()
    worker.join()
    maker.join()
    assert waited and made.is_set()


def test_each_thread_sees_how_its_own_last_restoration_ran() -> None:
    """Workers sharing a restorer report their own photo's tiling, whatever ran since."""
    import threading

    restorer = Restorer(tiny_anyir(0), "cpu", "fp32", tile=64, overlap=16, stats_side=32)
    large_done, small_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def large() -> None:
        restorer.restore_tensor(noisy_photo(1, 96, 128))
        large_done.set()
        small_done.wait(60)  # another worker restores a small photo in the meantime
        seen["large"] = restorer.last_run

    def small() -> None:
        large_done.wait(60)
        restorer.restore_tensor(noisy_photo(2, 32, 32))
        seen["small"] = restorer.last_run
        small_done.set()

    workers = [threading.Thread(target=large), threading.Thread(target=small)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert seen["small"] == RunInfo(1, 0, 0, False)  # one whole-image pass
    assert seen["large"] is not None and seen["large"].tiles > 1 and seen["large"].tile == 64
    assert restorer.last_run is None  # this thread restored nothing


def test_a_pass_that_overflows_in_low_precision_is_redone_in_fp32_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A network trained in fp32 can overflow fp16 (or, rarely, bf16): the pass is computed
    # again in fp32, and the --json record says which precision gave the output.
    from anyrestore.cli.common import compute_record

    class Overflows(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.is_autocast_enabled("cpu"):
                return torch.full_like(x, float("inf"))
            return x * 0.5

    x = torch.rand(3, 16, 24)
    r = Restorer(Overflows(), "cpu", "bf16", tile=0)
    with caplog.at_level("WARNING", logger="anyrestore"):
        out = r.restore_tensor(x)
    torch.testing.assert_close(out, x * 0.5)
    assert r.last_run is not None and r.last_run.recomputed_fp32
    assert "recomputing in fp32" in caplog.text
    record = compute_record(r)
    assert record["precision"] == "fp32" and "non-finite" in record["reason"]
    r.restore_tensor(x, strength=0.0)  # nothing runs: no precision, no runtime to report
    assert compute_record(r)["runtime"] is None and not r.last_run.recomputed_fp32


class _StatOverflows(torch.nn.Module):
    """An image-wide statistic that overflows under autocast (as an fp16 sum can)."""

    def __init__(self) -> None:
        super().__init__()
        self.stat = GlobalStat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def mean() -> torch.Tensor:
            v = x.mean(dim=(1, 2, 3), keepdim=True)
            return v * float("inf") if torch.is_autocast_enabled("cpu") else v

        return x * 0.5 + 0.0 * self.stat(mean, x.shape[0])


class _TileOverflows(torch.nn.Module):
    """A statistic made in low precision and used by a layer (ClusIR's prompts and keys);
    every tile overflows under autocast, so each is redone in fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.stat = GlobalStat()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stat(lambda: self.lin(x.mean(dim=(2, 3))), x.shape[0])
        out = x * 0.5 + 0.0 * self.lin(s)[:, :, None, None].float()
        return out + float("nan") if torch.is_autocast_enabled("cpu") else out


@pytest.mark.parametrize("model", [_StatOverflows, _TileOverflows])
def test_tiles_redone_in_fp32_replay_statistics_fit_for_fp32(model: type) -> None:
    # Tiles replay statistics recorded on the whole image: an fp32 retry must neither meet
    # bf16 values (a dtype error) nor replay values that overflowed (a "damaged weights" exit).
    x = torch.rand(3, 64, 64)
    r = Restorer(model(), "cpu", "bf16", tile=32, stats_side=32)
    torch.testing.assert_close(r.restore_tensor(x), x * 0.5)
    assert r.last_run is not None and r.last_run.tiles > 1 and r.last_run.recomputed_fp32


def test_once_the_statistics_overflow_every_tile_of_the_image_runs_in_fp32() -> None:
    # The docs' promise: a tile run at bf16 beside fp32 statistics would be computed twice
    # wherever it overflows, and reported as fp32 where it did not.
    class Watched(_StatOverflows):
        def __init__(self) -> None:
            super().__init__()
            self.autocast: list[bool] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.autocast.append(torch.is_autocast_enabled("cpu"))
            return super().forward(x)

    model = Watched()
    r = Restorer(model, "cpu", "bf16", tile=32, stats_side=32)
    r.restore_tensor(torch.rand(3, 64, 64))
    assert r.last_run is not None and r.last_run.tiles == len(model.autocast) - 2
    assert model.autocast[:2] == [True, False]  # the recording pass, then again in fp32
    assert not any(model.autocast[2:])  # every tile


def test_bf16_is_measured_against_the_fp32_the_restorer_would_run(
    bf16_probe_kernels: list[object],
) -> None:
    # On a CPU with native bf16 the automatic choice times bf16 against fp32 with fp32's own
    # 1x1 kernel: the engine hands the models' kernel switch to the measurement.
    from anyrestore.models.layers.pointwise import pointwise_kernel

    assert Restorer(tiny_anyir(), "cpu", "auto").precision == "fp32"
    assert bf16_probe_kernels == [pointwise_kernel]
