"""Speed runs: latency, throughput and peak memory of a restore at several image sizes.

Latency is the median wall time of ``repeats`` calls of the engine's ``restore_tensor`` on a
CPU tensor after ``warmup`` calls (when there are any, at least two under runtime auto on
OpenVINO: the first of a size runs eager, the second compiles), so it includes the copies to
and from the device (what a user waits for). Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` over the timed calls (reset just before) minus
  what was allocated before them: the weights already on the GPU (every candidate's, as the
  bench loads them all first) are not counted, as on the CPU.
* CPU (Linux): the growth of the process's resident set over the timed calls: the kernel's
  peak-RSS mark (``VmHWM``) is reset by writing ``5`` to ``/proc/self/clear_refs``, and the
  peak minus the resident size before the calls is reported (weights already loaded are not
  counted). Where that reset is not allowed, a thread samples ``VmRSS`` every millisecond.
  Elsewhere the memory is not measured (``null``).
"""

from __future__ import annotations

import logging
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from anyrestore.bench.candidates import Candidate
from anyrestore.compute import release_freed_memory
from anyrestore.errors import UsageError

log = logging.getLogger("anyrestore")

DEFAULT_SIZES = ("256", "512", "1024", "12mp")
_TWELVE_MP = (3000, 4000)  # h, w: a 12-megapixel 4:3 photo


@dataclass(frozen=True)
class SpeedSize:
    """One measured input size; ``tiled`` ones go through the engine's tiling."""

    h: int
    w: int
    tiled: bool = False

    @property
    def label(self) -> str:
        return f"{self.w}x{self.h}" + (" tiled" if self.tiled else "")

    @property
    def megapixels(self) -> float:
        return self.h * self.w / 1e6


def parse_sizes(spec: str | Sequence[str]) -> list[SpeedSize]:
    """Parse ``256,512,WxH,tiled:WxH,12mp`` (``12mp`` = a tiled 4000x3000 image)."""
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    sizes = []
    for raw in tokens:
        token = raw.strip().lower()
        if not token:
            continue
        tiled = token.startswith("tiled:")
        token = token.removeprefix("tiled:")
        if token == "12mp":
            sizes.append(SpeedSize(*_TWELVE_MP, tiled=True))
            continue
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", token)
        if match is None:
            raise UsageError(f"bad size {raw!r}; use N, WxH, tiled:WxH or 12mp")
        w = int(match.group(1))
        h = int(match.group(2) or w)
        if h < 1 or w < 1:
            raise UsageError(f"bad size {raw!r}: sides must be positive")
        sizes.append(SpeedSize(h, w, tiled))
    if not sizes:
        raise UsageError("no sizes given for the speed suite")
    return sizes


class PeakMemory:
    """Peak memory growth (MiB) of the code run inside ``with``; see the module docstring."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_reset = False
        self._start_kb = 0
        self._max_kb = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            # Growth, as on the CPU: every candidate's weights are on the GPU by now.
            self._start_kb = torch.cuda.memory_allocated(self.device) // 1024
        elif _status_kb("VmRSS") is not None:
            release_freed_memory()  # growth from here, not from blocks the heap kept
            self._start_kb = _status_kb("VmRSS") or 0
            self._hwm_reset = _reset_hwm()
            if not self._hwm_reset:
                self._max_kb = self._start_kb
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._max_kb = max(self._max_kb, _status_kb("VmRSS") or 0)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak_kb = torch.cuda.max_memory_allocated(self.device) // 1024
            self.peak_mb = max(0, peak_kb - self._start_kb) / 1024
        elif self._hwm_reset:
            self.peak_mb = max(0, (_status_kb("VmHWM") or 0) - self._start_kb) / 1024
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._max_kb = max(self._max_kb, _status_kb("VmRSS") or 0)
            self.peak_mb = max(0, self._max_kb - self._start_kb) / 1024


_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, flags=re.M)
    return int(match.group(1)) if match else None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def time_calls(
    fn: Callable[[], object], repeats: int, after: Callable[[], object] | None = None
) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn``; ``after`` runs untimed after each."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if after is not None:
            after()
    return times


def _last_run(restore: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The engine's account of the last call (``RunInfo``), when ``restore`` is an engine's."""
    return getattr(getattr(restore, "__self__", None), "last_run", None)


def _restore_once(restore: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> object:
    with torch.inference_mode():
        return restore(x)


def run_speed(
    candidates: Sequence[Candidate],
    sizes: Sequence[SpeedSize],
    *,
    repeats: int = 5,
    warmup: int = 1,
    make_tiled: Callable[[Candidate], Callable[[torch.Tensor], torch.Tensor]] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One record per (model, size); tiled sizes use ``make_tiled(candidate)``'s restore."""
    if repeats < 1 or warmup < 0:
        raise UsageError("--repeats must be >= 1 and warm-up runs >= 0")
    records = []
    for cand in candidates:
        if cand.is_baseline:
            continue  # the identity has no cost worth timing
        tiled_restore = make_tiled(cand) if make_tiled and any(s.tiled for s in sizes) else None
        device = torch.device(cand.device)
        for size in sizes:
            if on_step is not None:
                on_step(f"{cand.label} @ {size.label}")
            restore = tiled_restore if size.tiled and tiled_restore else cand.restore
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(1, 3, size.h, size.w, generator=gen)

            call = partial(_restore_once, restore, x)
            # Under runtime auto on OpenVINO, a size's first whole-image call runs eager and
            # its second compiles: warm up until the path is the one a run settles on.
            for _ in range(max(warmup, cand.calls_to_settle) if warmup else 0):
                call()
            ran: list[str | None] = []

            def note_runtime(restore: Callable = restore, ran: list = ran) -> None:
                last = _last_run(restore)
                ran.append(last.runtime if last is not None else None)

            with PeakMemory(device) as mem:
                times = time_calls(call, repeats, after=note_runtime)
            seconds = statistics.median(times)
            if len(set(ran)) > 1:
                log.warning(
                    "%s @ %s: the timed calls ran on %s; the median mixes them (warm up "
                    "with --warmup 1 or more to time the path a run settles on)",
                    cand.label,
                    size.label,
                    " then ".join(dict.fromkeys(r or "?" for r in ran)),
                )
            # What `fix` would do at this size: a tiled size up to the model's reference side
            # is still one whole-image pass (Restorer._one_pass), and the record says so.
            run = _last_run(restore)
            records.append(
                {
                    "model": cand.label,
                    "source": cand.source,
                    "suite": "speed",
                    "kind": size.label,
                    "size": size.label,
                    "height": size.h,
                    "width": size.w,
                    "tiled": size.tiled,
                    "tiles": run.tiles if run is not None else 1,
                    # What ran each timed call (torch or openvino; null outside the engine).
                    "runtimes": ran,
                    "device": cand.device,
                    "compute": cand.compute,
                    "threads": torch.get_num_threads(),
                    "repeats": repeats,
                    "seconds": seconds,
                    "megapixels_per_s": size.megapixels / seconds,
                    "peak_mem_mb": mem.peak_mb,
                    "psnr": None,
                    "ssim": None,
                }
            )
    return records
