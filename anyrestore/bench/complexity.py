"""Parameter and multiply-accumulate counts, the papers' "Params" and "FLOPs".

The papers' FLOPs are multiply-accumulates (MACs): PromptIR's "132G" is 132 GMACs at
224x224. ``torch.utils.flop_counter`` counts 2 FLOPs per MAC for convolutions and matrix
products, so ``count_macs`` halves its total. Element-wise ops, norms, softmax and FFTs are
not counted (fvcore, which AnyIR's authors used, also counts BatchNorm: 0.3 % of anyir_t;
docs/architectures.md).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from anyrestore.compute import is_out_of_memory, model_code_digest, read_cache, write_cache
from anyrestore.errors import DeviceError, UsageError

_CACHE_FILE = "complexity.json"


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int | tuple[int, int] = 224) -> int:
    """Multiply-accumulates of one eval-mode forward on a 1x3xHxW input.

    Counted with every layer computed as the paper writes it (``step_by_step``): a layer
    that trades a few extra MACs for fewer passes over memory does not change the count.
    """
    from anyrestore.models.base import step_by_step

    h, w = (size, size) if isinstance(size, int) else size
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.rand(1, 3, h, w, device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), step_by_step(model), counter:
            model(x)
        return counter.get_total_flops() // 2
    except RuntimeError as exc:  # the count runs every layer whole, without banding
        if not is_out_of_memory(exc):
            raise
        raise DeviceError(
            f"counting MACs at {w}x{h} needs more memory than this machine has (the count "
            "runs one whole forward pass); use a smaller size: MACs grow with the pixels"
        ) from None
    finally:
        model.train(was_training)


#: Figures the papers report (Params, and "FLOPs" = MACs at 224x224), for side-by-side display.
PAPER_FIGURES: dict[str, dict[str, float]] = {
    "anyir_t": {"params": 5.74e6, "flops_224": 26e9},
    "anyir_s": {"params": 8.51e6, "flops_224": 39e9},
    "clusir_t": {"params": 6.89e6, "flops_224": 3.79e9},
    "clusir_s": {"params": 25.03e6, "flops_224": 13.42e9},
    "clusir_b": {"params": 54.66e6, "flops_224": 28.85e9},
}


def describe_models(size: int = 224, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per registered variant (or per name given): params, MACs, weights for it (those
    this installation has or can fetch)."""
    from anyrestore.models import get_spec, list_models
    from anyrestore.weights import entries_for_model, left_out_of_wheel

    rows = []
    for name in names or list_models():
        try:
            get_spec(name)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        params, macs = _counts(name, (size, 224))
        rows.append(
            {
                "name": name,
                "arch": get_spec(name).arch,
                "params": params,
                "flops": macs[0],
                "flops_224": macs[1],
                "flops_convention": "MACs (multiply-accumulates), as the papers report FLOPs",
                "weights": [e.name for e in entries_for_model(name) if not left_out_of_wheel(e)],
                "paper": PAPER_FIGURES.get(name),
            }
        )
    return rows


def _counts(name: str, sizes: tuple[int, ...]) -> tuple[int, list[int]]:
    """Params and MACs at each of ``sizes`` of variant ``name`` with its default config.

    Counting runs a forward pass per variant and size, the slow part of ``anyrestore models``,
    so the figures are kept in the cache folder, keyed by everything they depend on: the
    variant, the size, the model code, this counter's code and torch (its counting formulas).
    The model is built once, and only when some size is not kept yet.
    """
    from anyrestore.models import create_model

    code = f"{model_code_digest()[:12]}|{_counter_digest()}|torch {torch.__version__}"
    keys = [f"{name}|{size}|{code}" for size in sizes]
    cache = read_cache(_CACHE_FILE)
    kept = [cache.get(key) for key in keys]
    if all(_is_count(k) for k in kept):
        return kept[0][0], [k[1] for k in kept]
    torch.manual_seed(0)
    model = create_model(name)
    params = count_params(model)
    by_size = {size: count_macs(model, size) for size in set(sizes)}  # (224, 224) counts once
    macs = [by_size[size] for size in sizes]
    cache.update({key: [params, m] for key, m in zip(keys, macs, strict=True)})
    write_cache(_CACHE_FILE, cache)
    return params, macs


def _is_count(kept: object) -> bool:
    """Whether a cache entry is a [params, MACs] pair (a hand-edited file may hold anything)."""
    return isinstance(kept, list) and len(kept) == 2 and all(isinstance(v, int) for v in kept)


@lru_cache(maxsize=1)
def _counter_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
