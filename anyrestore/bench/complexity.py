"""Parameter and multiply-accumulate counts, the papers' "Params" and "FLOPs".

The papers' FLOPs are multiply-accumulates (MACs): PromptIR's "132G" is 132 GMACs at
224x224. ``torch.utils.flop_counter`` counts 2 FLOPs per MAC for convolutions and matrix
products, so ``count_macs`` halves its total. Element-wise ops, norms, softmax and FFTs are
not counted, as in the fvcore/thop counters the papers used.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from anyrestore.compute import model_code_digest, read_cache, write_cache
from anyrestore.errors import UsageError

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
    """One row per registered variant (or per name given): params, MACs, weights for it."""
    from anyrestore.models import get_spec, list_models
    from anyrestore.weights import entries_for_model

    rows = []
    for name in names or list_models():
        try:
            get_spec(name)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        params, macs = _counts(name, size)
        rows.append(
            {
                "name": name,
                "arch": get_spec(name).arch,
                "params": params,
                "flops": macs,
                "flops_224": macs if size == 224 else _counts(name, 224)[1],
                "flops_convention": "MACs (multiply-accumulates), as the papers report FLOPs",
                "weights": [e.name for e in entries_for_model(name)],
                "paper": PAPER_FIGURES.get(name),
            }
        )
    return rows


def _counts(name: str, size: int) -> tuple[int, int]:
    """(params, MACs at ``size``) of variant ``name`` with its default config.

    Counting runs a forward pass per variant (about ten seconds for all of them), so the
    figures are kept in the cache folder, keyed by everything they depend on: the variant,
    the size, the model code, this counter's code and torch (its counting formulas).
    """
    from anyrestore.models import create_model

    key = f"{name}|{size}|{model_code_digest()[:12]}|{_counter_digest()}|torch {torch.__version__}"
    cache = read_cache(_CACHE_FILE)
    kept = cache.get(key)
    if isinstance(kept, list) and len(kept) == 2 and all(isinstance(v, int) for v in kept):
        return kept[0], kept[1]
    torch.manual_seed(0)
    model = create_model(name)
    counts = count_params(model), count_macs(model, size)
    cache[key] = list(counts)
    write_cache(_CACHE_FILE, cache)
    return counts


@lru_cache(maxsize=1)
def _counter_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
