"""Bare state dicts into anyrestore checkpoints: the one place that reads a pickle of weights.

A model's weights saved elsewhere (``torch.save(model.state_dict())``, or
``safetensors.torch.save_file`` without anyrestore's metadata) hold the tensors but not which
model they fit, so ``fix`` cannot load them. ``convert_state_dict`` is told the variant, checks
every key and shape against it, and writes a safetensors checkpoint that carries its
architecture. A pickle of weights is opened only here, when a user names it to be converted,
and with ``torch.load(weights_only=True)``: tensors and plain containers, never code (the
training loop reads its own resume checkpoints the same way: ``training.state``).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from anyrestore.errors import UsageError, WeightsError, first_line
from anyrestore.weights.checkpoint import check_output_name, load_state_strict, save_checkpoint
from anyrestore.weights.manifest import FILE_SUFFIXES

#: Suffixes of files torch.save and friends write: never loaded, only converted.
PICKLE_SUFFIXES = FILE_SUFFIXES - {".safetensors"}
#: Where training code commonly keeps the weights inside a saved dict, in the order tried
#: (an EMA copy before the raw weights, as the better of the two).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "params_ema", "params", "net")
#: Prefixes that wrappers add to every key: DistributedDataParallel, torch.compile, Lightning.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")
#: Before this release a crafted file could still run code through ``weights_only=True``
#: (CVE-2025-32434, fixed in 2.6; CVE-2026-24747, memory corruption, fixed in 2.10); the
#: package allows older torch for everything else.
SAFE_TORCH_LOAD = (2, 10)


def _torch_release() -> tuple[int, int]:
    major, minor, *_ = torch.__version__.split("+")[0].split(".")
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (safetensors, or a pickle read with ``weights_only``), taken out
    of a wrapping dict and stripped of wrapper prefixes."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"input not found: {path}" if not path.exists() else f"{path} is not a file"
        )
    if path.suffix.lower() == ".safetensors":
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors' own error types for a bad header
            raise WeightsError(
                f"{path} is not a readable safetensors file ({first_line(exc)})"
            ) from None
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        if _torch_release() < SAFE_TORCH_LOAD:
            raise WeightsError(
                f"{path}: torch {torch.__version__} cannot read a torch file safely (a crafted "
                "one could run code); convert it with torch >= 2.10"
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise WeightsError(
                f"{path} holds more than tensors and plain containers (objects or code), which "
                f"are never loaded{_refusal_reason(exc)}"
            ) from None
        except Exception as exc:  # a truncated or foreign file
            raise WeightsError(f"{path} is not a readable torch file ({first_line(exc)})") from None
    else:
        raise UsageError(
            f"{path}: convert reads .safetensors or a torch file "
            f"({', '.join(sorted(PICKLE_SUFFIXES))})"
        )
    return _unwrap(obj, path)


# Lines of torch's refusal that advise, rather than say what was refused.
_TORCH_ADVICE = (
    "weights_only",
    "Weights only load failed",
    "Please file an issue",
    "documentation",
)


def _refusal_reason(exc: BaseException) -> str:
    """What torch's tensors-only unpickler refused (" (Unsupported global: ...)"), without
    its advice to load the file with ``weights_only=False``, which is never taken here."""
    for line in str(exc).splitlines():
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not any(word in line for word in _TORCH_ADVICE):
            return f" ({line.split(' was not an allowed global')[0]})"
    return ""


#: The ``format`` field of ``anyrestore train``'s resume checkpoints (``training.state``).
TRAIN_CHECKPOINT_FORMAT = "anyrestore-train"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj.get("format") == TRAIN_CHECKPOINT_FORMAT:
        # Its "model" would convert, silently without the EMA copy and the training facts.
        raise WeightsError(
            f"{path} is a resume checkpoint of `anyrestore train`: export its weights with "
            f"`anyrestore train export {path} -o OUT.safetensors`"
        )
    for _ in range(3):  # e.g. {"state_dict": {"model": {...}}}
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if not isinstance(obj, dict):
            raise WeightsError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            hint = (
                "; a checkpoint of `anyrestore train` is exported with `anyrestore train export`"
                if "optimizer" in obj
                else ""
            )
            raise WeightsError(
                f"{path} holds no dict of tensors (keys: {', '.join(map(str, list(obj)[:6]))})"
                + hint
            )
        obj = inner
    else:
        raise WeightsError(f"{path}: no dict of tensors within three levels of nesting")
    state = {str(k): v for k, v in obj.items()}
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def convert_state_dict(
    source: str | os.PathLike[str],
    variant: str,
    output: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the weights of ``source`` as an anyrestore checkpoint of ``variant`` to ``output``.

    Every key and shape must match the variant (``load_state_strict``); the file records the
    name of the file it came from. ``output`` is written atomically and never over ``source``.
    """
    from anyrestore.models import create_model

    source, output = Path(source), Path(output)
    check_output_name(output, "the converted checkpoint")
    if output.exists() and source.exists() and os.path.samefile(source, output):
        raise UsageError(f"refusing to write the converted checkpoint over its source {source}")
    try:  # before the file is read: a mistyped --model costs no load of a large file
        model = create_model(variant)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    state = read_state_dict(source)
    load_state_strict(model, state, source=str(source))
    return save_checkpoint(
        model, output, name=variant, dtype=dtype, extra={"converted_from": source.name}
    )
