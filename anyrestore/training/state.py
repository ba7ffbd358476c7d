"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

These are our own training-state files (``last.pt``), written with ``torch.save`` and read back
only when the user passes ``--resume``, with ``torch.load(weights_only=True)``: they hold only
tensors and plain containers (RNG states are stored as tensors and lists), so no arbitrary
object is ever unpickled. Inference checkpoints are a different thing: ``export`` writes those
as safetensors.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anyrestore.errors import ConfigError, UsageError, first_line
from anyrestore.files import atomic_path
from anyrestore.weights.convert import TRAIN_CHECKPOINT_FORMAT

FORMAT = TRAIN_CHECKPOINT_FORMAT  # what weights convert recognises and sends to export
VERSION = 1


def rng_state() -> dict[str, Any]:
    """The global RNG states of this process: python, numpy, torch CPU and CUDA."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


#: How torch.save's file writer words a failed write (a full disk) in a RuntimeError.
_WRITER_WORDS = ("inline_container", "PytorchStreamWriter", "file write failed")


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a resume checkpoint atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    except (OSError, RuntimeError) as exc:
        # torch.save says a full disk as a RuntimeError of its file writer; others are not ours
        if isinstance(exc, RuntimeError) and not any(w in str(exc) for w in _WRITER_WORDS):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        try:
            free = f"; {shutil.disk_usage(path.parent).free >> 20} MB free on its disk"
        except OSError:
            free = ""
        raise UsageError(
            f"cannot write the checkpoint {path}: {reason}{free}. The previous one, if any, "
            "is as it was"
        ) from None
    return path


def resolve_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run folder holding ``last.pt``."""
    p = Path(path)
    if p.is_dir():
        last = p / "last.pt"
        if not last.is_file():
            raise ConfigError(f"no training checkpoint (last.pt) in {p}")
        return last
    if not p.is_file():
        raise ConfigError(f"training checkpoint not found: {p} (give its last.pt or run folder)")
    return p


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resume checkpoint onto the CPU (``weights_only=True``: tensors and containers)."""
    p = resolve_resume(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and containers: never unpickled
        raise ConfigError(
            f"{p} is not an anyrestore training checkpoint: it holds Python objects that are "
            "not loaded, for safety"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ConfigError(
            f"{p} is not a readable training checkpoint ({first_line(exc)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{p} is not an anyrestore training checkpoint")
    if state.get("version") != VERSION:
        raise ConfigError(f"{p}: training checkpoint version {state.get('version')} unsupported")
    return state
