"""Safetensors checkpoints that carry their own architecture config.

A file alone rebuilds its model: the metadata holds ``arch`` and the config as JSON
(safetensors metadata is a str -> str map), plus optional facts about how it was trained.
Loading trusts nothing in the file: the model is first built on the meta device and its key
shapes compared with the file's (so a config asking for a huge model allocates nothing), and
every tensor must be finite, of a float dtype where the model has one, and of sane magnitude.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from anyrestore.errors import UsageError, WeightsError, first_line
from anyrestore.files import atomic_write
from anyrestore.models.registry import build_model, get_spec

FORMAT_VERSION = "1"
#: No trained weight comes near this; a tensor beyond it is damaged (or not weights at all).
MAX_ABS_WEIGHT = 1e4


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    dtype: torch.dtype | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and config atomically; ``dtype`` casts floating tensors."""
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
    data = save(state, metadata=metadata)
    header, start = _canonical_header(data)
    # the tensor bytes go out as a view of ``data``, not copied again
    return atomic_write(path, header, memoryview(data)[start:])


def _canonical_header(data: bytes) -> tuple[bytes, int]:
    """The header of ``data`` (a safetensors file) in one fixed order, and where its tensor
    bytes start, so that the same weights and facts always give the same file and sha256.

    safetensors writes the metadata map in a random order on each call; the header is
    rewritten with sorted metadata and the tensors in the order of their data, padded with
    spaces to 8 bytes as safetensors pads it. The tensor data is untouched.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    ordered: dict[str, Any] = {}
    if "__metadata__" in header:
        ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    for key in sorted(header, key=lambda k: (header[k]["data_offsets"], k)):
        ordered[key] = header[key]
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, 8 + size


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of ``path``, or a WeightsError if it is not a checkpoint."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(
            f"{path} is not a readable safetensors file ({first_line(exc)})"
        ) from None


def metadata_list(raw: str | None) -> list[str]:
    """A metadata value meant as a list of names (``trained_for``): a JSON list, one JSON
    value, or bare text from a tool that wrote the name as it is."""
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        value = raw
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value in (None, "") else [str(value)]


def checkpoint_config(
    path: str | os.PathLike[str], meta: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """The architecture and model config ``path``'s metadata declares (``meta``, when the caller
    has read it already), checked for shape, without reading any weights."""
    if meta is None:
        meta = read_metadata(path)
    if meta.get("format") != "anyrestore" or "arch" not in meta or "config" not in meta:
        raise WeightsError(
            f"{path} has no anyrestore architecture metadata (arch/config); if it holds a "
            "model's bare weights, `anyrestore weights convert FILE --model VARIANT -o NEW` "
            "adds it"
        )
    arch = meta["arch"]
    try:
        config = json.loads(meta["config"])
    except ValueError:
        raise WeightsError(f"{path}: its config metadata is not valid JSON") from None
    if not isinstance(config, dict):
        raise WeightsError(
            f"{path}: its config metadata must be a JSON object, not {type(config).__name__}"
        )
    name = meta.get("name")
    if name is not None:
        try:
            named_arch = get_spec(name).arch
        except KeyError:
            named_arch = None  # a custom name is allowed
        if named_arch is not None and named_arch != arch:
            raise WeightsError(
                f"{path}: its metadata names model {name!r} ({named_arch}) but holds a {arch!r} model"
            )
    return arch, config


def _build(path: str | os.PathLike[str], arch: str, config: dict[str, Any]) -> nn.Module:
    try:
        return build_model(arch, config)
    except Exception as exc:  # a bad config can fail anywhere in a constructor
        raise WeightsError(
            f"{path}: cannot build {arch!r} from its config ({first_line(exc)})"
        ) from None


def load_checkpoint(path: str | os.PathLike[str], *, expect_arch: str | None = None) -> nn.Module:
    """Rebuild the model described by ``path``'s metadata and load its weights strictly (CPU, fp32)."""
    meta = read_metadata(path)
    arch, config = checkpoint_config(path, meta)
    if expect_arch is not None and arch != expect_arch:
        raise WeightsError(f"{path} holds a {arch!r} model, expected {expect_arch!r}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
            # Shapes are checked on a skeleton that allocates nothing, so a damaged config
            # (a width of millions) fails cleanly. Layers skip random inits on meta tensors:
            # there normal_ and friends run Python kernels that import torch._dynamo.
            with torch.device("meta"):
                skeleton = _build(path, arch, config)
            _check_keys(skeleton, shapes, source=str(path))
            del skeleton
            model = _build(path, arch, config)
            state = {key: f.get_tensor(key) for key in shapes}
    except WeightsError:
        raise
    except Exception as exc:  # a damaged tensor table: offsets past the end, bad dtypes
        raise WeightsError(f"{path}: cannot read its tensors ({first_line(exc)})") from None
    load_state_strict(model, state, source=str(path))
    model.eval()
    return model


def _check_keys(model: nn.Module, shapes: dict[str, tuple[int, ...]], *, source: str) -> None:
    """Every key present with the model's shape, else a WeightsError naming what differs."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = sorted(k for k in set(own) & set(shapes) if own[k] != shapes[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch in {_short(wrong)}")
        arch = getattr(model, "arch", type(model).__name__)
        raise WeightsError(f"{source} does not fit {arch}: " + "; ".join(parts))


def _check_values(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str
) -> None:
    """Float where the model is float, finite, and within MAX_ABS_WEIGHT."""
    for key in sorted(state):
        value, mine = state[key], own[key]
        if mine.is_floating_point() != value.is_floating_point():
            raise WeightsError(
                f"{source}: tensor {key} is {str(value.dtype).removeprefix('torch.')}, "
                f"expected {str(mine.dtype).removeprefix('torch.')}; the file is damaged"
            )
        if not value.is_floating_point() or value.numel() == 0:
            continue
        wide = value.float()
        if not torch.isfinite(wide).all():
            raise WeightsError(f"{source}: tensor {key} holds NaN or infinite values")
        peak = float(wide.abs().max())
        if peak > MAX_ABS_WEIGHT:
            raise WeightsError(
                f"{source}: tensor {key} holds a value of magnitude {peak:.3g}, far beyond any "
                "trained weight; the file is damaged"
            )


def check_output_name(output: str | os.PathLike[str], what: str) -> None:
    """Refuse an output name other than ``*.safetensors``: a file named ``.pt`` would be
    refused by ``fix`` as a pickle and misread by ``weights convert``."""
    if Path(output).suffix.lower() != ".safetensors":
        raise UsageError(f"{output}: {what} must be a .safetensors file")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` with every key and shape checked, naming what does not match."""
    own = model.state_dict()
    _check_keys(model, {k: tuple(v.shape) for k, v in state.items()}, source=source)
    _check_values(own, state, source)
    cast = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(cast, strict=True)


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"
