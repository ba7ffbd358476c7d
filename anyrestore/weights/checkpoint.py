"""Safetensors checkpoints that carry their own architecture config.

A file alone rebuilds its model: the metadata holds ``arch`` and the config as JSON
(safetensors metadata is a str -> str map), plus optional facts about how it was trained.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from anyrestore.errors import WeightsError
from anyrestore.models.registry import build_model

FORMAT_VERSION = "1"


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    dtype: torch.dtype | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and config atomically; ``dtype`` casts floating tensors."""
    path = Path(path)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[key] = value.contiguous()
    metadata = {
        "format": "anyrestore",
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "config": json.dumps(model.config_dict(), sort_keys=True),
    }
    if name:
        metadata["name"] = name
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of ``path``, or a WeightsError if it is not a checkpoint."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None


def load_checkpoint(path: str | os.PathLike[str], *, expect_arch: str | None = None) -> nn.Module:
    """Rebuild the model described by ``path``'s metadata and load its weights strictly (CPU, fp32)."""
    meta = read_metadata(path)
    if meta.get("format") != "anyrestore" or "arch" not in meta or "config" not in meta:
        raise WeightsError(f"{path} has no anyrestore architecture metadata (arch/config)")
    arch = meta["arch"]
    if expect_arch is not None and arch != expect_arch:
        raise WeightsError(f"{path} holds a {arch!r} model, expected {expect_arch!r}")
    try:
        model = build_model(arch, json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot build {arch!r} from its config ({exc})") from None
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            state[key] = f.get_tensor(key)
    load_state_strict(model, state, source=str(path))
    model.eval()
    return model


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` with every key and shape checked, naming what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch in {_short(wrong)}")
        raise WeightsError(f"{source} does not fit {model.arch}: " + "; ".join(parts))
    cast = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(cast, strict=True)


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"
