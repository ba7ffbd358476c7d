"""Speed runs: size parsing, timing records and the peak-memory measurement."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from anyrestore.bench import speed
from anyrestore.bench.candidates import Candidate, identity_candidate
from anyrestore.bench.speed import PeakMemory, SpeedSize, parse_sizes, run_speed
from anyrestore.compute import reuse_freed_memory
from anyrestore.errors import UsageError


def test_parse_sizes() -> None:
    assert parse_sizes("16, 24x20,tiled:40x32,12mp") == [
        SpeedSize(16, 16),
        SpeedSize(20, 24),
        SpeedSize(32, 40, tiled=True),
        SpeedSize(3000, 4000, tiled=True),
    ]
    assert SpeedSize(3000, 4000, tiled=True).label == "4000x3000 tiled"
    for bad in ("abc", "0", "", "12x"):
        with pytest.raises(UsageError):
            parse_sizes(bad)


def _hold(mb: int, seconds: float = 0.05) -> None:
    block = torch.ones(mb * 2**20 // 4)  # float32: actually touched, so resident
    time.sleep(seconds)
    del block


@pytest.mark.skipif(speed._status_kb("VmRSS") is None, reason="needs /proc (Linux)")
@pytest.mark.parametrize("reset_allowed", [True, False])
def test_cpu_peak_memory_sees_a_temporary_allocation(
    monkeypatch: pytest.MonkeyPatch, reset_allowed: bool
) -> None:
    if not reset_allowed:  # the sampling-thread fallback
        monkeypatch.setattr(speed, "_reset_hwm", lambda: False)
    # As the CLI runs it: the heap keeps freed blocks. A block freed before the measurement
    # must not hide the growth inside it.
    reuse_freed_memory()
    _hold(160)
    with PeakMemory(torch.device("cpu")) as mem:
        _hold(120)
    assert mem.peak_mb is not None
    assert 100 <= mem.peak_mb < 400
    with PeakMemory(torch.device("cpu")) as small:
        _hold(8)
    assert small.peak_mb is not None and small.peak_mb < 100


def test_gpu_peak_memory_leaves_out_what_was_on_the_gpu_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bench puts every candidate on the GPU before timing any: one model's figure must not
    # carry the others' weights.
    mb = 2**20
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 900 * mb)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1150 * mb)
    with PeakMemory(torch.device("cuda")) as mem:
        pass
    assert mem.peak_mb == 250


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _candidate(label: str, calls: list[tuple[int, ...]]) -> Candidate:
    model = _Tiny().eval()

    def restore(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return model(x)

    return Candidate(label, "test", restore, model, "cpu")


def test_run_speed_records_per_model_and_size() -> None:
    calls: list[tuple[int, ...]] = []
    tiled_calls: list[tuple[int, ...]] = []
    cands = [identity_candidate(), _candidate("tiny", calls)]
    sizes = parse_sizes("16,24x20,tiled:40x32")
    records = run_speed(
        cands, sizes, repeats=3, warmup=2, make_tiled=lambda c: _candidate("t", tiled_calls).restore
    )
    assert [(r["model"], r["size"]) for r in records] == [
        ("tiny", "16x16"),
        ("tiny", "24x20"),
        ("tiny", "40x32 tiled"),
    ]
    assert calls.count((1, 3, 16, 16)) == 5  # warm-up + timed runs
    assert tiled_calls == [(1, 3, 32, 40)] * 5
    for r in records:
        assert r["seconds"] > 0
        assert r["megapixels_per_s"] == pytest.approx(r["height"] * r["width"] / 1e6 / r["seconds"])
        assert r["suite"] == "speed" and r["device"] == "cpu" and r["repeats"] == 3
        assert "peak_mem_mb" in r
    with pytest.raises(UsageError):
        run_speed(cands, sizes, repeats=0)


class _SettlingEngine:
    """Like a Restorer under runtime auto: a size's first call runs eager, later ones not."""

    def __init__(self) -> None:
        self.model = _Tiny().eval()
        self.calls = 0
        self.last_run: SimpleNamespace | None = None

    def restore_tensor(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        runtime = "torch" if self.calls == 1 else "openvino"
        self.last_run = SimpleNamespace(runtime=runtime, tiles=1)
        return self.model(x)


def test_records_say_what_ran_each_timed_call_and_warn_when_it_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cold = _SettlingEngine()
    cand = Candidate("auto", "test", cold.restore_tensor, cold.model, "cpu")
    (record,) = run_speed([cand], parse_sizes("16"), repeats=3, warmup=0)
    assert record["runtimes"] == ["torch", "openvino", "openvino"]
    assert "torch then openvino" in caplog.text and "--warmup" in caplog.text
    caplog.clear()
    warm = _SettlingEngine()
    cand = Candidate("auto", "test", warm.restore_tensor, warm.model, "cpu", calls_to_settle=2)
    (record,) = run_speed([cand], parse_sizes("16"), repeats=3, warmup=1)
    assert record["runtimes"] == ["openvino"] * 3 and not caplog.text
