"""The OpenVINO runtime restores what eager PyTorch restores, whole or in tiles, and is chosen
only where it can run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR
from typer.testing import CliRunner

import anyrestore.compute as compute
from anyrestore.cli.app import app
from anyrestore.engine import Restorer, read_image
from anyrestore.engine import openvino_runtime as ovr
from anyrestore.errors import UsageError
from anyrestore.metrics import psnr
from anyrestore.models import create_model
from anyrestore.weights.checkpoint import load_checkpoint

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2] / "anyrestore"
SAMPLE = ROOT / "assets" / "samples" / "sample_degraded.jpg"
SHIPPED_ANYIR = ROOT / "weights" / "embedded" / "anyir_t-synthetic.safetensors"
_REAL_BF16 = compute.native_bf16  # before conftest pretends every CPU lacks it


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("anyir_t", **TINY_ANYIR).eval()


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    # smooth content plus noise, so the statistics are not those of pure noise
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), (h, w))[0]
    return (base + 0.1 * torch.randn(3, h, w, generator=g)).clamp(0, 1)


def test_a_whole_image_matches_eager_pytorch(tiny: torch.nn.Module) -> None:
    x = _image(70, 90)  # not a multiple of the model's 8: padded and cropped like eager
    eager = Restorer(tiny, "cpu", "fp32", tile=0).restore_tensor(x)
    ov = Restorer(tiny, "cpu", "fp32", tile=0, runtime="openvino")
    assert ov.path.runtime == "openvino" and "OpenVINO" in ov.describe()
    # The line says what OpenVINO does not run: asked for, it compiles every size
    assert ov.describe().endswith("; tiled statistics run on eager torch")
    out = ov.restore_tensor(x)
    assert out.shape == x.shape
    assert float(psnr(out[None], eager[None])) > 60.0


def test_tiles_replay_the_whole_image_statistics(tiny: torch.nn.Module) -> None:
    # The replay graph takes the statistics recorded on the whole image as inputs: every tile
    # must use them, not the values of the image the graph was traced on, nor its own.
    x = _image(200, 168, seed=1)
    kwargs = {"tile": 96, "stats_side": 96}
    eager = Restorer(tiny, "cpu", "fp32", **kwargs).restore_tensor(x)
    ov = Restorer(tiny, "cpu", "fp32", runtime="openvino", **kwargs)
    out = ov.restore_tensor(x)
    assert ov.last_run is not None and ov.last_run.stats_replayed and ov.last_run.tiles > 1
    assert float(psnr(out[None], eager[None])) > 60.0
    live = Restorer(tiny, "cpu", "fp32", stats_method="live", **kwargs).restore_tensor(x)
    assert float(psnr(live[None], eager[None])) < 60.0  # the check above can tell them apart


def test_auto_compiles_only_for_tiles_and_sizes_seen_again(
    monkeypatch: pytest.MonkeyPatch, tiny: torch.nn.Module
) -> None:
    # Compiling for one small image costs more than OpenVINO saves on it: a first size runs
    # eager, a size seen again and every tile run on OpenVINO; the output is the same.
    monkeypatch.setattr(compute, "openvino_chosen", lambda *args: True)  # even in fp32
    r = Restorer(tiny, "cpu", "fp32", tile=96, stats_side=96, runtime="auto")
    assert r.path.runtime == "openvino"
    assert r.calls_to_settle == 2  # what a benchmark must warm up before timing
    assert Restorer(tiny, "cpu", "fp32", runtime="openvino").calls_to_settle == 1
    compiled = r._openvino._compiled  # type: ignore[union-attr]
    x = _image(64, 80)
    first = r.restore_tensor(x)
    assert not compiled and r.last_run is not None and r.last_run.runtime == "torch"
    again = r.restore_tensor(x)
    assert [kind for kind, *_ in compiled] == ["live"] and r.last_run.runtime == "openvino"
    assert float(psnr(again[None], first[None])) > 60.0
    r.restore_tensor(_image(200, 168))
    assert "replay" in [kind for kind, *_ in compiled]


def test_a_converted_model_is_kept_for_the_next_run_and_never_run_damaged(
    tiny: torch.nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = _image(48, 40)
    first = ovr.OpenVinoModel(tiny, "fp32", directory=tmp_path)
    reference = first(x[None])
    assert first.conversions == 1
    # OpenVINO's compiled copy sits in a folder of these weights' own (some releases key a
    # compiled copy by shapes alone), and its threads are not pinned to the first cores.
    assert any((tmp_path / "compiled" / ovr.graph_key(tiny)).iterdir())
    (compiled,) = first._compiled.values()
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    again = ovr.OpenVinoModel(tiny, "fp32", directory=tmp_path)
    assert torch.equal(again(x[None]), reference)
    assert again.conversions == 0
    # The kept graph is found by a key of the weights: other weights never reuse it.
    twin = create_model("anyir_t", **TINY_ANYIR).eval()
    twin.load_state_dict(tiny.state_dict())
    assert ovr.graph_key(twin) == ovr.graph_key(tiny)
    with torch.no_grad():
        next(twin.parameters()).add_(1e-3)
    assert ovr.graph_key(twin) != ovr.graph_key(tiny)

    # OpenVINO reads weights with other bytes at the same size without complaint: only the
    # checksum kept beside the graph tells, and the damaged weights must never run.
    (weights,) = tmp_path.glob("*-live.bin")
    data = bytearray(weights.read_bytes())
    quarter = len(data) // 4
    data[quarter : 3 * quarter] = b"\x7f" * (2 * quarter)  # weights of 3.4e38
    weights.write_bytes(bytes(data))
    runner = ovr.OpenVinoModel(tiny, "fp32", directory=tmp_path)
    out = runner(x[None])
    assert runner.conversions == 1 and "damaged" in caplog.text
    assert float(psnr(out.clamp(0, 1), reference.clamp(0, 1))) > 60.0
    # The graph converted again is kept with a fresh checksum: the next run loads it.
    kept = ovr.OpenVinoModel(tiny, "fp32", directory=tmp_path)
    kept(x[None])
    assert kept.conversions == 0


def test_a_graph_that_cannot_be_kept_on_disk_converts_once_per_run(
    tiny: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino as ov

    def full_disk(graph: object, path: str, **kwargs: object) -> None:
        Path(path).write_text("half")  # what a writer leaves when the disk fills up
        Path(path).with_suffix(".bin").write_bytes(b"half")
        raise RuntimeError("Check 'bin_file' failed at src/core/src/pass/serialize.cpp")

    monkeypatch.setattr(ov, "save_model", full_disk)
    runner = ovr.OpenVinoModel(tiny, "fp32", directory=tmp_path)
    for h, w in ((48, 40), (56, 64)):
        x = _image(h, w)
        eager = Restorer(tiny, "cpu", "fp32", tile=0).restore_tensor(x)
        assert float(psnr(runner(x[None]).clamp(0, 1), eager[None])) > 60.0
    assert runner.conversions == 1
    assert [p.name for p in tmp_path.iterdir()] == ["compiled"]  # no half-written files


def test_a_broken_openvino_install_is_named_and_auto_falls_back(
    monkeypatch: pytest.MonkeyPatch, tiny: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util
    import logging
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real_find_spec("json"))
    monkeypatch.setitem(sys.modules, "openvino", None)  # installed, but the import fails
    compute.openvino_problem.cache_clear()
    try:
        assert "does not load" in (compute.openvino_problem() or "")
        with pytest.raises(UsageError, match="does not load"):
            compute.choose_path("cpu", "fp32", model=tiny, runtime="openvino")
        monkeypatch.setattr(compute, "native_bf16", lambda: "AMX-BF16")
        monkeypatch.setattr(compute, "_cached", lambda key, measure: 1.0)
        with caplog.at_level(logging.WARNING, logger="anyrestore"):
            path = compute.choose_path("cpu", "auto", model=tiny, runtime="auto")
        assert path.runtime == "torch" and "restoring with PyTorch" in caplog.text
    finally:
        compute.openvino_problem.cache_clear()


def test_an_openvino_that_imports_but_cannot_start_leaves_auto_on_pytorch(
    monkeypatch: pytest.MonkeyPatch, tiny: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    # A partial install, or a CPU plugin that fails: the import works, the runtime does not.
    def broken_core() -> None:
        raise AttributeError("module 'openvino' has no attribute 'Core'")

    monkeypatch.setattr(ovr, "_core", broken_core)
    monkeypatch.setattr(compute, "native_bf16", lambda: "AMX-BF16")
    monkeypatch.setattr(compute, "_cached", lambda key, measure: 1.0)
    with caplog.at_level("WARNING", logger="anyrestore"):
        r = Restorer(tiny, "cpu", "auto", runtime="auto")
    assert r.path.runtime == "torch" and "OpenVINO cannot run here" in caplog.text
    x = _image(40, 48)
    assert torch.equal(r.restore_tensor(x), Restorer(tiny, "cpu", "fp32").restore_tensor(x))
    with pytest.raises(UsageError, match="OpenVINO cannot run here.*--runtime torch"):
        Restorer(tiny, "cpu", "fp32", runtime="openvino")


def test_an_openvino_that_fails_to_compile_a_graph_leaves_auto_on_pytorch(
    monkeypatch: pytest.MonkeyPatch, tiny: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    # The CPU plugin loads at the first compile (a tile, or a size seen again), not at Core().
    def broken_compile(self, kind, height, width):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp: plugin failed")

    monkeypatch.setattr(ovr.OpenVinoModel, "_compiled_for", broken_compile)
    monkeypatch.setattr(compute, "native_bf16", lambda: "AMX-BF16")
    monkeypatch.setattr(compute, "_cached", lambda key, measure: 1.0)
    kwargs = {"tile": 96, "stats_side": 96}
    r = Restorer(tiny, "cpu", "auto", runtime="auto", **kwargs)
    assert r.path.runtime == "openvino"
    x = _image(200, 168)
    with caplog.at_level("WARNING", logger="anyrestore"):
        out = r.restore_tensor(x)
    assert "OpenVINO cannot run here" in caplog.text and "plugin failed" in caplog.text
    assert r.path.runtime == "torch" and r.last_run is not None and r.last_run.runtime == "torch"
    assert torch.equal(out, Restorer(tiny, "cpu", "fp32", **kwargs).restore_tensor(x))
    asked = Restorer(tiny, "cpu", "fp32", runtime="openvino", **kwargs)
    with pytest.raises(UsageError, match="OpenVINO cannot run here.*--runtime torch"):
        asked.restore_tensor(x)


def test_auto_in_fp32_and_the_passes_openvino_leaves_run_eager_pytorch_s_own_choice(
    monkeypatch: pytest.MonkeyPatch, tiny: torch.nn.Module
) -> None:
    # OpenVINO is picked for its bf16 (its fp32 is no faster than eager); the eager passes
    # beside it (a tiled image's statistics, a new size) take what eager PyTorch would:
    # here bf16 measured slower than fp32, and 1x1 convolutions measured faster than GEMMs.
    monkeypatch.setattr(compute, "native_bf16", lambda: "AVX512-BF16")
    monkeypatch.setattr(compute, "_cached", lambda key, measure: 0.8 if "1x1" not in key else 1.2)
    assert Restorer(tiny, "cpu", "fp32", runtime="auto").path.runtime == "torch"
    r = Restorer(tiny, "cpu", "auto", runtime="auto")
    assert (r.path.runtime, r.path.precision) == ("openvino", "bf16")
    assert (r._eager.runtime, r._eager.precision, r._eager.pointwise) == ("torch", "fp32", "conv")
    x = _image(40, 48)
    eager = Restorer(tiny, "cpu", "fp32", runtime="torch")
    assert eager.path.pointwise == "conv"
    assert torch.equal(r.restore_tensor(x), eager.restore_tensor(x))  # a first size: eager
    from anyrestore.cli.common import compute_record

    record = compute_record(r)  # what fix --json says: how this image was computed
    assert (record["runtime"], record["precision"], record["pointwise"]) == (
        "torch",
        "fp32",
        "conv",
    )


def test_models_it_cannot_run_are_refused_with_a_reason() -> None:
    clusir = create_model("clusir_t", dim=8, heads=(1, 1, 2, 2), prompt_dim=16)
    with pytest.raises(UsageError, match="--runtime torch"):
        Restorer(clusir, "cpu", "fp32", runtime="openvino")
    with pytest.raises(UsageError, match="fp32 or bf16"):
        compute.choose_path("cpu", "fp16", runtime="openvino")


def test_auto_takes_openvino_only_where_it_can_run(
    monkeypatch: pytest.MonkeyPatch, tiny: torch.nn.Module
) -> None:
    clusir = create_model("clusir_t", dim=8, heads=(1, 1, 2, 2), prompt_dim=16)
    monkeypatch.setattr(compute, "native_bf16", lambda: "AMX-BF16")
    monkeypatch.setattr(compute, "_cached", lambda key, measure: 1.0)
    path = compute.choose_path("cpu", "auto", model=tiny, runtime="auto")
    assert (path.runtime, path.precision) == ("openvino", "bf16")
    assert compute.choose_path("cpu", "auto", model=clusir, runtime="auto").runtime == "torch"
    assert compute.choose_path("cpu", "auto", model=tiny, runtime="torch").runtime == "torch"
    monkeypatch.setattr(compute, "openvino_installed", lambda: False)  # not installed
    assert compute.choose_path("cpu", "auto", model=tiny, runtime="auto").runtime == "torch"
    with pytest.raises(UsageError, match=r"needs the openvino package: pip install openvino$"):
        compute.choose_path("cpu", "auto", model=tiny, runtime="openvino")
    monkeypatch.setattr(compute, "openvino_installed", lambda: True)
    monkeypatch.setattr(compute, "native_bf16", lambda: None)  # e.g. an AVX2-only CPU
    assert compute.choose_path("cpu", "auto", model=tiny, runtime="auto").runtime == "torch"
    asked = compute.choose_path("cpu", "auto", model=tiny, runtime="openvino")
    assert (asked.runtime, asked.precision) == ("openvino", "fp32")
    with pytest.raises(UsageError, match="native bf16"):
        compute.choose_path("cpu", "bf16", model=tiny, runtime="openvino")


def test_fix_reports_the_runtime_and_refuses_an_unknown_one(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "out.png"
    args = ["fix", str(SAMPLE), "-o", str(out), "--weights", str(tiny_checkpoint), "--json"]
    result = runner.invoke(app, [*args, "--runtime", "openvino", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compute"]["runtime"] == "openvino"
    assert out.is_file()
    bad = runner.invoke(app, [*args, "--runtime", "tensorrt"])
    assert bad.exit_code == 2
    assert "unknown runtime 'tensorrt'" in bad.stderr and "Traceback" not in bad.output


@pytest.mark.slow
@pytest.mark.skipif(_REAL_BF16() is None, reason="OpenVINO bf16 needs a CPU with native bf16")
def test_bf16_on_openvino_is_within_40_db_of_fp32_on_the_shipped_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compute, "native_bf16", _REAL_BF16)
    image = read_image(SAMPLE)
    x = torch.from_numpy(image.rgb).permute(2, 0, 1)[:, :192, :256].contiguous()
    model = load_checkpoint(SHIPPED_ANYIR)
    fp32 = Restorer(model, "cpu", "fp32", tile=0).restore_tensor(x)
    bf16 = Restorer(model, "cpu", "bf16", tile=0, runtime="openvino").restore_tensor(x)
    assert float(psnr(bf16[None], fp32[None])) >= 40.0


_COME_AND_GO = """
import gc, torch
from torch.utils.data import DataLoader
from anyrestore.engine import Restorer
from anyrestore.models import create_model
torch.manual_seed(0)
model = create_model("anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1).eval()
runners = [Restorer(model, "cpu", "fp32", tile=0, runtime="openvino") for _ in range(4)]
for i, runner in enumerate(runners):
    runner.restore_tensor(torch.rand(3, 40 + 8 * i, 48))
del runners, runner
gc.collect()
loader = DataLoader(list(range(16)), batch_size=4, num_workers=2, persistent_workers=True)
print(sum(len(batch) for batch in loader))
"""


def test_the_process_can_fork_workers_after_openvino_runners_are_gone() -> None:
    # Once several runners had released their OpenVINO cores, forking data-loader workers
    # crashed the process (SIGSEGV at the next signal) on an AMX machine.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _COME_AND_GO], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "16"


def test_only_the_last_few_sizes_stay_compiled(
    tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each compiled size holds that size's activation memory: a long batch of scans of many
    # sizes kept every one. The oldest go; a size met again is compiled again, the same.
    monkeypatch.setattr(ovr, "COMPILED_SIZES", 2)  # fewer compilations than the real 4
    runner = ovr.OpenVinoModel(tiny, "fp32")  # the graph converted by the tests above
    first = _image(40, 48)
    before = runner(first[None])
    for height in (48, 56):
        runner(_image(height, 48)[None])
    assert [key[1:] for key in runner._compiled] == [(48, 48), (56, 48)]
    assert torch.equal(runner(first[None]), before)
