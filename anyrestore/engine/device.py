"""Which device and numeric precision inference runs on, chosen once and reported."""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

from anyrestore.errors import DeviceError, UsageError

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must exist (else DeviceError).

    Under ``torchrun`` (``LOCAL_RANK`` set), ``auto`` and a bare ``cuda`` mean this rank's GPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    local_rank = os.environ.get("LOCAL_RANK")
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            return torch.device("cpu")
    match = _DEVICE_RE.match(name)
    if match is None:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available here")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available here")
    if index is None:
        index = local_rank if local_rank is not None else str(torch.cuda.current_device())
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise DeviceError(f"device cuda:{index} requested but only {count} CUDA device(s) exist")
    return torch.device("cuda", int(index))


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto`` is fp16 on CUDA and fp32 elsewhere; fp16 on CPU is refused (UsageError)."""
    precision = precision.strip().lower()
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is not supported on the CPU; use --precision fp32 (or bf16)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"bf16 is not supported on {device}; use --precision fp16 or fp32")
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager[object]:
    """Mixed precision for the forward pass; weights stay fp32, as autocast expects."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def empty_cache(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error so a retry can use them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
