"""Where and how a model runs: device, numeric precision, memory layout and CPU threads.

One policy for inference and training. ``auto`` precision means:

* CUDA: bf16 where the GPU supports it, else fp16 (fp32 without tensor cores).
* Apple MPS: fp32.
* CPU: bf16 only where the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16, read from the
  CPU's flags at run time) *and* a short measurement of the model itself shows bf16 faster
  than fp32 on this machine; fp32 otherwise. AMX runs bf16 convolutions several times faster
  than fp32, while AVX512-BF16 alone can be slower for dense 1x1 convolutions, so the flag
  alone does not decide; bf16 must be at least ``BF16_MARGIN`` times faster. The measurement
  is cached per CPU, torch version, thread count and model configuration, so it runs once
  (one taken while another process kept the cores busy serves only runs that find them busy
  too, until a run on a quiet machine measures again).

Features are always channels-last (NHWC): on every CPU measured the 1x1 convolutions and
per-pixel norms of both models run several times faster that way, and bf16 gains nothing
without it. In fp32 on the CPU, 1x1 convolutions run either as one matrix product over the
pixels or as PyTorch's (oneDNN's) 1x1 convolution, whichever a short measurement of a few
typical layers finds faster on this CPU and thread count, once for inference and once with
gradients for training (cached like the bf16 one): on an AVX2-only EPYC with two threads the
convolution was 1.1-1.8x faster per layer; with one thread PyTorch gives a small batch's 1x1
convolution its slow im2col path and the GEMM wins.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.choices import PRECISIONS, RUNTIMES, check_choice
from anyrestore.errors import DeviceError, UsageError, first_line
from anyrestore.files import atomic_write

log = logging.getLogger("anyrestore")

Precision = Literal["fp32", "fp16", "bf16"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")
#: bf16 must beat fp32 by this factor in the probe to be chosen: a margin for timing noise
#: (AMX machines gain several times this; AVX512-BF16 alone measured 0.8-1.1x).
BF16_MARGIN = 1.2
#: Side of the square image the probe times the model on.
PROBE_SIDE = 128
#: The 1x1 convolution must beat the GEMM by this factor on the probe's layers to be chosen.
POINTWISE_MARGIN = 1.05
#: (c_in, c_out, side) of the square channels-last maps the 1x1 probe times: the shapes of
#: anyir_t's first two levels, where most of its 1x1 work is, and one of ClusIR's.
POINTWISE_SHAPES = ((28, 84, 256), (56, 56, 256), (112, 56, 256), (56, 224, 128), (224, 112, 128))
#: The kernel's count of runnable threads (4th field, "running/total"): how busy the machine
#: is while a probe runs.
LOADAVG = Path("/proc/loadavg")

__all__ = [
    "MAX_THREADS",
    "PRECISIONS",
    "RUNTIMES",
    "ComputePath",
    "Precision",
    "autocast",
    "cache_root",
    "choose_path",
    "cpu_name",
    "cuda_native_bf16",
    "empty_cache",
    "native_bf16",
    "prepare_model",
    "resolve_device",
    "release_freed_memory",
    "reuse_freed_memory",
    "set_threads",
    "training_pointwise",
]


# -- device ---------------------------------------------------------------------------


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cuda_build_runs_here() -> bool:
    """Whether this torch build has kernels for the first GPU: recent wheels dropped older
    GPUs (a GTX 1050, sm_61, under a cu128 build), which torch still reports available and
    which then fail at the first kernel. ``auto`` passes over such a GPU, with a warning."""
    missing = cuda_kernels_missing(0)
    if missing:
        log.warning("%s; using the CPU", missing)
    return not missing


def cuda_kernels_missing(index: int) -> str | None:
    """What is missing where this torch build has no kernels for GPU ``index``; else None."""
    try:
        major, minor = torch.cuda.get_device_capability(index)
        archs = torch.cuda.get_arch_list()
    except Exception:  # a driver that cannot answer: let the first use say what is wrong
        return None
    # NVIDIA's sm_XY (binary) and compute_XY (PTX) names; ROCm's gfx names are not judged.
    known = [
        a
        for a in archs
        if (a.startswith("sm_") and a[3:].isdigit())
        or (a.startswith("compute_") and a[8:].isdigit())
    ]
    if not known:
        return None
    runs = any(
        (a.startswith("sm_") and a[3:-1] == str(major) and int(a[-1]) <= minor)  # same major
        or (a.startswith("compute_") and int(a[8:]) <= major * 10 + minor)  # PTX, compiled here
        for a in known
    )
    if runs:
        return None
    return (
        f"this torch build has no kernels for the GPU ({torch.cuda.get_device_name(index)}, "
        f"sm_{major}{minor}; built for {' '.join(archs)})"
    )


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must exist (else DeviceError).

    A name that is no device at all (``tpu``) is a usage error, like any other bad option value.

    Under ``torchrun`` (``LOCAL_RANK`` set), ``auto`` and a bare ``cuda`` mean this rank's GPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    local_rank = os.environ.get("LOCAL_RANK")
    if name == "auto":
        if torch.cuda.is_available() and cuda_build_runs_here():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            return torch.device("cpu")
    match = _DEVICE_RE.match(name)
    if match is None:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available here")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available here")
    if index is None and local_rank is not None:
        if not (local_rank.isascii() and local_rank.strip().isdigit()):
            raise UsageError(
                f"LOCAL_RANK={local_rank!r} is not a GPU index (torchrun sets it to 0, 1, ...)"
            )
        index = local_rank.strip()
    if index is None:
        index = str(torch.cuda.current_device())
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise DeviceError(f"device cuda:{index} requested but only {count} CUDA device(s) exist")
    missing = cuda_kernels_missing(int(index))
    if missing:  # it would fail at the first kernel, an internal error
        raise DeviceError(f"{missing}: install a torch build for it, or use --device cpu")
    return torch.device("cuda", int(index))


_OOM: tuple[type[BaseException], ...] = (
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
)


#: How a failed allocation reads in a plain RuntimeError: PyTorch's CPU allocator, OpenVINO's
#: CPU plugin ("Failed to allocate N bytes of memory"), a C++ std::bad_alloc, Apple's GPU
#: ("MPS backend out of memory"), and a CUDA library's own workspace ("CUBLAS_STATUS_ALLOC_FAILED",
#: "CUDA error: out of memory").
_OOM_WORDS = (
    "DefaultCPUAllocator",
    "Failed to allocate",
    "bad_alloc",
    "bad allocation",
    "out of memory",
    "ALLOC_FAILED",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation, on a GPU or in the CPU's memory."""
    if isinstance(exc, _OOM):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc) for w in _OOM_WORDS)


def empty_cache(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error so a retry can use them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


# -- the CPU --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine() or "cpu", frozenset()
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return (
        name.group(1).strip() if name else platform.machine() or "cpu",
        frozenset(flags.group(1).split()) if flags else frozenset(),
    )


def cpu_name() -> str:
    return _cpuinfo()[0]


def native_bf16() -> str | None:
    """The CPU's native bf16 instructions ("AMX-BF16", "AVX512-BF16"), or None."""
    flags = _cpuinfo()[1]
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


#: More threads than this are refused (torch takes the count as a C int: a far larger one is
#: an overflow, not a setting); the default takes every core up to it.
MAX_THREADS = 1024


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads (None: ``OMP_NUM_THREADS`` if set, else every core)."""
    cores = _cores()
    if threads is None:
        every_core = min(cores, MAX_THREADS)
        # OpenMP also takes a list, one count per nesting level: the first is the outer one.
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        threads = int(env) if env.isascii() and env.isdigit() and int(env) > 0 else every_core
        if threads > MAX_THREADS:
            log.warning(
                "OMP_NUM_THREADS=%s is more than %d; using %d", env, MAX_THREADS, every_core
            )
            threads = every_core
    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    if threads > MAX_THREADS:
        raise UsageError(f"threads must be at most {MAX_THREADS}, got {threads}")
    if threads > cores:
        log.warning(
            "%d threads on %d core%s: threads beyond one a core take turns and run slower",
            threads,
            cores,
            "" if cores == 1 else "s",
        )
    torch.set_num_threads(threads)
    return threads


#: glibc's mallopt parameters, and the values ``reuse_freed_memory`` gives them.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 64 << 20
_TRIM_THRESHOLD = 2**31 - 1  # the largest int mallopt takes


@lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 64 MB for reuse instead of unmapping them.

    Every layer of a forward or backward pass allocates maps of tens of MB and frees them a
    moment later. glibc serves blocks above its mmap threshold (32 MB at most by its own
    heuristic) from fresh pages and unmaps them on free, so each such map is page-faulted
    and zero-filled by the kernel before the layer can write it, a large share of the run
    time on a small CPU (docs/performance.md). With the thresholds raised the heap keeps
    those pages and the next layer reuses them. Blocks above 64 MB (full-resolution maps of
    a large whole-image pass) still get their own pages: kept, they would fragment the heap
    and raise the peak footprint more than they save. Called by the CLI and by training; the
    Python API leaves the allocator alone unless the caller asks. Returns whether it took
    effect (False where the C library is not glibc or refuses the values).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library Python itself is linked with
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Order matters: setting either value switches glibc's adaptive threshold off, and a trim
    # threshold alone would leave every block above 128 kB on fresh pages.
    if not mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD):
        return False
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    return True


def release_freed_memory() -> None:
    """Hand the free blocks the heap keeps back to the kernel (glibc's ``malloc_trim``).

    For measuring memory growth after ``reuse_freed_memory``: otherwise a pass that fits in
    blocks an earlier pass left behind shows no growth at all. A no-op elsewhere.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _cores() -> int:
    """The CPUs this process may keep busy: those it may run on, capped by its cgroup's CPU
    quota (``docker run --cpus=2`` on a 64-core host: 2; threads beyond the quota wait at
    every OpenMP barrier while the container is throttled)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cpu_quota()
    return max(1, min(cpus, quota)) if quota else cpus


def _cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")
) -> int | None:
    """CPUs' worth of this process's cgroup CPU quota, rounded up (v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``, in its own cgroup or any above it); None without one."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        lines = []
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":  # v2: quota and period in one file
            folders, read = _cgroup_folders(root, path), _read_cpu_max
        elif "cpu" in controllers.split(","):  # v1: two files in the cpu hierarchy
            folders, read = _cgroup_folders(root / controllers, path), _read_cfs
        else:
            continue
        limits += [q for q in map(read, folders) if q]
    return min(limits) if limits else None


def _cgroup_folders(base: Path, path: str) -> list[Path]:
    """``base/path`` and the folders above it up to ``base`` (a quota on any of them holds)."""
    folder = base / path.strip("/")
    return [folder, *(p for p in folder.parents if p.is_relative_to(base))]


def _read_cpu_max(folder: Path) -> int | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return -(-int(quota) // int(period)) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def _read_cfs(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return -(-quota // period) if quota > 0 and period > 0 else None


# -- the compute path -----------------------------------------------------------------


@dataclass(frozen=True)
class ComputePath:
    """The device, precision and memory layout a model runs with, and why they were chosen."""

    device: torch.device
    precision: Precision
    channels_last: bool
    reason: str
    #: "torch" (eager PyTorch) or "openvino" (``anyrestore.engine.openvino_runtime``).
    runtime: str = "torch"
    #: Whether the user named the runtime (``--runtime openvino``) rather than ``auto`` picking
    #: it: an asked-for OpenVINO compiles every size, an automatic one only repeated sizes.
    runtime_asked: bool = False
    #: How fp32 1x1 convolutions run in a forward pass without gradients ("gemm" or "conv"),
    #: and why; the engine sets it with ``anyrestore.models.layers.pointwise.pointwise_kernel``.
    pointwise: str = "gemm"
    pointwise_reason: str = ""

    def describe(self) -> str:
        layout = " channels-last" if self.channels_last and self.runtime == "torch" else ""
        runtime = " on OpenVINO" if self.runtime == "openvino" else ""
        why = f"{self.reason}; {self.pointwise_reason}" if self.pointwise_reason else self.reason
        count = torch.get_num_threads()
        threads = f", {count} thread{'s' * (count != 1)}" if self.device.type == "cpu" else ""
        return f"{self.device} {self.precision}{layout}{runtime}{threads} ({why})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "runtime": self.runtime,
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
            "pointwise": self.pointwise,
            "reason": self.reason,
        }

    def autocast(self) -> AbstractContextManager[object]:
        return autocast(self.device, self.precision)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """Mixed precision for the forward pass; weights stay fp32, as autocast expects."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def prepare_model(model: nn.Module, path: ComputePath) -> nn.Module:
    """Move ``model`` to the path's device and memory layout (in place; returned for chaining)."""
    fmt = torch.channels_last if path.channels_last else torch.contiguous_format
    return model.to(device=path.device, memory_format=fmt)


Probe = Callable[[nn.Module, torch.device], float]
#: Runs the model's fp32 1x1 layers with a kernel ("gemm" or "conv") inside it: the models'
#: own ``pointwise_kernel``, which the engine and training hand over (compute imports no model).
KernelScope = Callable[[str], AbstractContextManager[None]]


def choose_path(
    device: str | torch.device = "auto",
    precision: str = "auto",
    *,
    model: nn.Module | None = None,
    probe: Probe | None = None,
    runtime: str = "torch",
    pointwise_probe: Callable[[], float] | None = None,
    kernel_scope: KernelScope | None = None,
) -> ComputePath:
    """Resolve ``device``, ``precision`` and ``runtime`` ("auto" allowed) for ``model`` here.

    ``model`` is what an automatic CPU choice is measured on; without it, a CPU with native
    bf16 gets fp32 (the choice that is never badly slow) and 1x1 convolutions stay GEMMs.
    ``probe`` replaces the bf16 measurement (tests); it returns fp32 time / bf16 time;
    ``pointwise_probe`` replaces the 1x1 one (GEMM time / convolution time).
    ``runtime="auto"`` takes OpenVINO where ``openvino_chosen`` says so. With ``kernel_scope``
    the bf16 measurement times fp32 with the 1x1 kernel fp32 would take here.
    """
    path = _choose(
        device, precision, model, probe or partial(_time_bf16, kernels=kernel_scope), runtime
    )
    if (
        model is None
        or path.device.type != "cpu"
        or path.precision != "fp32"
        or path.runtime != "torch"
    ):
        return path
    kernel, why = _pointwise_choice("1x1", pointwise_probe or _time_pointwise)
    return replace(path, pointwise=kernel, pointwise_reason=why)


def training_pointwise(
    device: torch.device, precision: str, *, probe: Callable[[], float] | None = None
) -> tuple[str, str]:
    """The 1x1 kernel for training steps ("gemm" or "conv") and why ("" for the GEMM).

    Measured with gradients (forward and backward), apart from the inference choice: the
    backward kernels rank differently. Only fp32 on the CPU has a choice.
    """
    if device.type != "cpu" or precision != "fp32":
        return "gemm", ""
    return _pointwise_choice("1x1-train", probe or partial(_time_pointwise, gradients=True))


def _pointwise_choice(what: str, measure: Callable[[], float]) -> tuple[str, str]:
    speedup = _cached(_pointwise_key(what), measure)
    if speedup >= POINTWISE_MARGIN:
        return "conv", f"1x1 as convolutions, {speedup:.2f}x"
    return "gemm", ""


def _choose(
    device: str | torch.device,
    precision: str,
    model: nn.Module | None,
    probe: Probe,
    runtime: str,
) -> ComputePath:
    dev = resolve_device(device)
    precision = check_choice(precision, PRECISIONS, "precision")
    runtime = check_choice(runtime, RUNTIMES, "runtime")
    if runtime == "openvino" or (runtime == "auto" and openvino_chosen(dev, model, precision)):
        return _openvino_path(dev, precision, model, asked=runtime == "openvino")
    if precision != "auto":
        _check_supported(precision, dev)
        reason = "requested"
        if precision == "bf16" and dev.type == "cpu" and native_bf16() is None:
            # Emulated bf16 convolutions run many times slower than fp32 here; say so in
            # the line fix and batch print, rather than leave a slow run unexplained.
            reason = "requested; no native bf16 on this CPU, so slower than fp32"
        return ComputePath(dev, precision, True, reason)  # type: ignore[arg-type]
    if dev.type == "cuda":
        if cuda_native_bf16(dev):
            return ComputePath(dev, "bf16", True, "GPU supports bf16")
        if torch.cuda.get_device_properties(dev).major < 7:  # no tensor cores: no gain
            return ComputePath(dev, "fp32", True, "GPU without tensor cores")
        return ComputePath(dev, "fp16", True, "GPU without native bf16")
    if dev.type != "cpu":
        return ComputePath(dev, "fp32", True, f"{dev.type} default")
    isa = native_bf16()
    if isa is None:
        return ComputePath(dev, "fp32", True, "no native bf16 on this CPU")
    if model is None:
        return ComputePath(dev, "fp32", True, f"{isa}, not measured")
    # "|best fp32": measured against fp32 with its faster 1x1 kernel (older entries: the GEMM)
    key = f"{_model_key(model)}|best fp32"
    speedup = _cached(key, lambda: probe(model, dev))
    if speedup >= BF16_MARGIN:
        return ComputePath(dev, "bf16", True, f"{isa}, bf16 measured {speedup:.1f}x faster")
    return ComputePath(dev, "fp32", True, f"{isa}, but bf16 measured {speedup:.2f}x")


_NO_OPENVINO = "the OpenVINO runtime needs the openvino package: pip install openvino"


@lru_cache(maxsize=1)
def openvino_problem() -> str | None:
    """Why the ``openvino`` package (the ``openvino`` extra) cannot be used: not installed,
    or installed but failing to import (a missing library, a wheel for another platform)."""
    if importlib.util.find_spec("openvino") is None:
        return _NO_OPENVINO
    try:
        import openvino  # noqa: F401
    except Exception as exc:
        return (
            f"the openvino package is installed but does not load ({first_line(exc)}); "
            "reinstall it (pip install --force-reinstall openvino) or use "
            "--runtime torch"
        )
    return None


def openvino_installed() -> bool:
    """Whether the ``openvino`` package is installed and loads."""
    return openvino_problem() is None


def openvino_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot run on OpenVINO, or None when it can (``traceable`` models)."""
    if getattr(model, "traceable", False):
        return None
    name = getattr(model, "arch", type(model).__name__)
    hint = "use --runtime torch"
    if os.environ.get("ANYRESTORE_RUNTIME", "").strip().lower() == "openvino":
        hint += " (ANYRESTORE_RUNTIME=openvino in the environment asks for OpenVINO)"
    return (
        f"{name} has no OpenVINO path (one traced graph cannot compute it for every image); " + hint
    )


def openvino_chosen(device: torch.device, model: nn.Module | None, precision: str = "auto") -> bool:
    """Whether ``runtime="auto"`` runs ``model`` on OpenVINO at ``precision``.

    Where the CPU computes bf16 natively, OpenVINO's bf16 restores anyir_t about twice as
    fast as the eager path even counting its one-off conversion on a large photo
    (docs/performance.md); elsewhere, and in fp32, it has not been measured to win, so eager
    PyTorch stays.
    """
    if device.type != "cpu" or model is None or native_bf16() is None:
        return False
    if precision not in ("auto", "bf16"):
        return False
    if openvino_refusal(model) is not None:
        return False
    if not openvino_installed():
        problem = openvino_problem()
        if problem and problem != _NO_OPENVINO:  # installed but broken: say why it is unused
            log.warning("%s; restoring with PyTorch", problem)
        return False
    return True


def _openvino_path(
    device: torch.device, precision: str, model: nn.Module | None, *, asked: bool
) -> ComputePath:
    if device.type != "cpu":
        raise UsageError(f"the OpenVINO runtime runs on the CPU, not {device}; use --device cpu")
    if not openvino_installed():
        raise UsageError(openvino_problem() or _NO_OPENVINO)
    if model is not None:
        reason = openvino_refusal(model)
        if reason:
            raise UsageError(reason)
    isa = native_bf16()
    # auto: a whole image of a size not seen before still runs eager (``Restorer._run``)
    why = "requested" if asked else f"{isa}, OpenVINO installed: tiles and repeated sizes"
    if precision == "auto":
        precision = "bf16" if isa else "fp32"
    elif precision not in ("fp32", "bf16"):
        raise UsageError(f"OpenVINO runs fp32 or bf16 on the CPU, not {precision}")
    elif precision == "bf16" and not isa:
        raise UsageError(
            "OpenVINO runs bf16 only on a CPU with native bf16 (AMX or AVX512-BF16); "
            "use --precision fp32 or --runtime torch"
        )
    return ComputePath(  # type: ignore[arg-type]
        device, precision, True, why, runtime="openvino", runtime_asked=asked
    )


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether this GPU (not the current one) computes bf16 natively: compute capability 8.0
    (Ampere) or later; on ROCm taken as yes (true of MI100 and later, not of MI50-class
    cards). ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (a
    T4, a V100), many times slower than fp16."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(device).major >= 8


def _check_supported(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is not supported on the CPU; use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not cuda_native_bf16(device):
        # is_bf16_supported() says yes on every CUDA GPU: emulated, many times slower
        raise UsageError(f"bf16 is not supported on {device}; use fp16 or fp32")


# -- the bf16 probe -------------------------------------------------------------------


def cache_root() -> Path:
    """Where measurements, MAC counts and converted models are kept: $ANYRESTORE_CACHE or
    ~/.cache/anyrestore."""
    root = os.environ.get("ANYRESTORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "anyrestore",
    )
    return Path(root)


def read_cache(name: str) -> dict[str, Any]:
    """The JSON object kept in the cache folder's file ``name``; empty if missing or unreadable."""
    try:
        cache = json.loads((cache_root() / name).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def write_cache(name: str, cache: dict[str, Any]) -> None:
    """Keep ``cache`` in the cache folder's file ``name`` (atomically); a read-only home only
    costs measuring or counting again next time."""
    path = cache_root() / name
    try:
        atomic_write(path, json.dumps(cache, indent=1, sort_keys=True).encode())
    except Exception as exc:
        log.debug("cannot keep %s: %s", path, exc)


_CACHE_FILE = "compute.json"


@lru_cache(maxsize=1)
def model_code_digest() -> str:
    """A digest of the package's model code (read as files): what was measured or converted
    with other code is measured or converted again."""
    root = Path(__file__).resolve().parent / "models"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _machine_key() -> str:
    """What a timing depends on besides the code: CPU, its vector and bf16 instructions,
    torch, threads. (A virtual machine's CPU name can be as bare as "AMD EPYC" for CPUs of
    different generations, and a machine image can move between them.)"""
    name, _ = _cpuinfo()
    isa = native_bf16() or "none"
    vector = torch.backends.cpu.get_cpu_capability()
    return f"{name}|{vector}|{isa}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def _model_key(model: nn.Module) -> str:
    config = getattr(model, "config_dict", None)
    described = json.dumps(config(), sort_keys=True) if callable(config) else type(model).__name__
    described += model_code_digest()  # a faster bf16 kernel path is a new measurement
    digest = hashlib.sha256(described.encode()).hexdigest()[:12]
    return f"{_machine_key()}|{digest}"


def _pointwise_key(what: str) -> str:
    return f"{what}|{_machine_key()}|{model_code_digest()[:12]}"


def others_running(samples: int = 3, interval: float = 0.05) -> int:
    """How many runnable threads the machine has besides the caller's, at the quietest of a
    few samples of ``/proc/loadavg`` (0 where that file is missing, as on macOS).

    A timing probe run beside another busy process measures the contention, not the CPU: its
    answer is kept only for runs on a busy machine (``_cached``). The least of several
    samples, so that this process's own worker threads, still spinning after their last
    parallel region, are not taken for another process.
    """
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        try:
            running = LOADAVG.read_text().split()[3].split("/")[0]
            counts.append(int(running) - 1)  # the thread reading the file is running too
        except (OSError, ValueError, IndexError):
            return 0
        if counts[-1] <= 0:
            return 0
    return min(counts)


#: Measurements this process took (or took from the cache file as provisional): used again
#: by this process (a batch, a bench or an app builds several models) without measuring or
#: reading again, also where the cache folder cannot be written.
_measured: dict[str, float] = {}
#: Appended to the key of a measurement taken while the machine was busy. Such a value
#: serves later runs that find the machine busy too (so a machine that is never quiet does
#: not pay for the probe at every start) and is replaced by the first run on a quiet one.
_BUSY = "|busy"


def _cached(key: str, measure: Callable[[], float]) -> float:
    """``measure()``'s ratio, measured once per ``key`` and kept in the cache file.

    One taken while other work kept the CPU busy is kept apart, as provisional: runs on a
    busy machine use it, and the next run on a quiet machine measures again.
    """
    if key in _measured:
        return _measured[key]
    cache = read_cache(_CACHE_FILE)
    value = cache.get(key)
    if _usable(value):
        return float(value)
    spare = max(_cores() - torch.get_num_threads(), 0)  # cores the run leaves
    before = others_running()
    provisional = cache.get(key + _BUSY)
    if before > spare and _usable(provisional):
        _measured[key] = float(provisional)
        return _measured[key]
    speedup = measure()
    _measured[key] = speedup
    busy = max(before, others_running())
    # Read again: another process may have kept a measurement of its own meanwhile.
    cache = read_cache(_CACHE_FILE)
    if busy > spare:  # a core was taken: the ratio measured the contention too
        log.info("measured %r while %d other threads ran; kept until a quiet run", key, busy)
        cache[key + _BUSY] = round(speedup, 3)
    else:
        cache[key] = round(speedup, 3)
        cache.pop(key + _BUSY, None)
    write_cache(_CACHE_FILE, cache)
    return speedup


def _usable(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _time_bf16(model: nn.Module, device: torch.device, kernels: KernelScope | None = None) -> float:
    """fp32 time / bf16 time of one channels-last forward at PROBE_SIDE (best of three each).

    With ``kernels`` (the models' ``pointwise_kernel``), fp32 runs with the 1x1 kernel its own
    path would take: bf16 has to beat the faster fp32, not the GEMM. The layout change happens
    outside inference mode: parameters converted inside it would become inference tensors
    that a later training step cannot use.
    """
    fp32_kernel = _pointwise_choice("1x1", _time_pointwise)[0] if kernels else "gemm"
    kernel = {"fp32": fp32_kernel, "bf16": "gemm"}
    scope = kernels or (lambda kind: nullcontext())
    was_training = model.training
    # On the device it is timed for (a Restorer for the CPU given a model on a GPU moves it
    # there next anyway), in the layout it runs in
    model.eval().to(device, memory_format=torch.channels_last)
    # A private generator: the caller's random stream is not the probe's to move
    x = torch.rand(1, 3, PROBE_SIDE, PROBE_SIDE, generator=torch.Generator().manual_seed(0))
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    try:
        with torch.inference_mode():
            for round_ in range(4):  # the first round warms both paths up and is not counted
                for precision in best:
                    start = time.perf_counter()
                    with autocast(device, precision), scope(kernel[precision]):
                        model(x)
                    if round_:
                        best[precision] = min(best[precision], time.perf_counter() - start)
    finally:
        model.train(was_training)
    return best["fp32"] / best["bf16"]


def _time_pointwise(gradients: bool = False) -> float:
    """GEMM time / 1x1 convolution time, summed over ``POINTWISE_SHAPES`` (fp32, best of 3).

    Layers rather than a model: the choice is the CPU's and the thread count's (oneDNN's
    1x1 kernel against the BLAS GEMM), measured in a second or two whatever the model.
    The two forms are those of ``anyrestore.models.layers.pointwise``: a linear map over the
    (b, h, w, c) view of a channels-last map, or ``F.conv2d`` with a 1x1 kernel.
    ``gradients`` times forward and backward, as a training step runs them.
    """

    def gemm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), weight).permute(0, 3, 1, 2)

    def conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight[:, :, None, None])

    gen = torch.Generator().manual_seed(0)
    cases = []
    for c_in, c_out, side in POINTWISE_SHAPES:
        x = torch.rand(1, c_in, side, side, generator=gen)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(gradients)
        weight = torch.rand(c_out, c_in, generator=gen).requires_grad_(gradients)
        upstream = torch.rand(1, c_out, side, side, generator=gen)
        cases.append((x, weight, upstream.contiguous(memory_format=torch.channels_last)))
    kernels = {"gemm": gemm, "conv": conv}
    best = {kind: float("inf") for kind in kernels}
    with torch.inference_mode(not gradients):
        for round_ in range(4):  # the first round warms both kernels up and is not counted
            for kind, run in kernels.items():
                start = time.perf_counter()
                for x, weight, upstream in cases:
                    y = run(x, weight)
                    if gradients:
                        torch.autograd.grad(y, (x, weight), upstream)
                if round_:
                    best[kind] = min(best[kind], time.perf_counter() - start)
    return best["gemm"] / best["conv"]
