"""Average the weights of inference checkpoints of one model (a "weight soup").

Checkpoints from the ends of consecutive training stages lie close together; their weighted mean
often keeps what each stage gained and evens out what a stage's data mix pushed too far, at no
training cost. Every floating tensor (weights and normalisation statistics) is averaged in
float64; integer buffers must agree, except BatchNorm's batch counters, which take the largest.
The result carries the facts of the input with the largest share (on equal shares, the one
with the most training steps), plus which files were averaged in which shares, so ``anyrestore
weights add`` can describe it. Training totals are the largest among the inputs, not their
sum: the inputs are usually stages of one chain, and a later stage's totals already include
the earlier ones.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anyrestore.errors import UsageError, WeightsError
from anyrestore.training.export import weight_dtype
from anyrestore.weights.checkpoint import (
    check_output_name,
    load_checkpoint,
    metadata_list,
    read_metadata,
    save_checkpoint,
)
from anyrestore.weights.resolve import resolve_weights, sha256_file

_TOTALS = ("steps", "samples_seen", "wall_time_s")


def average_checkpoints(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    shares: Sequence[float] | None = None,
    dtype: str = "fp16",
) -> tuple[Path, dict[str, Any]]:
    """Write the ``shares``-weighted mean of ``inputs`` (files or weights names) to ``output``;
    returns it and its facts.

    ``shares`` default to equal and are normalised to sum 1. The inputs must be one variant with
    one architecture config (a checkpoint of another model has other tensors, or the same
    tensors meaning other things).
    """
    if len(inputs) < 2:
        raise UsageError("average needs at least two checkpoints")
    torch_dtype = weight_dtype(dtype)
    check_output_name(output, "the average")
    shares = list(shares) if shares is not None else [1.0] * len(inputs)
    if len(shares) != len(inputs):
        raise UsageError(f"{len(shares)} shares for {len(inputs)} checkpoints")
    if not all(math.isfinite(s) and s > 0 for s in shares):
        raise UsageError("shares must be positive numbers")
    total = sum(shares)
    shares = [s / total for s in shares]
    # Usage checked first: a name may have to be fetched from the Hub.
    paths = [resolve_weights(p) for p in inputs]
    if any(p.resolve() == Path(output).resolve() for p in paths):
        raise UsageError(f"{output} is one of the inputs; write the average to a new file")
    if len({p.resolve() for p in paths}) < len(paths):  # a file twice, or a name and its file
        raise UsageError("a checkpoint is given twice; weight one more with --shares instead")

    models = [load_checkpoint(p) for p in paths]
    metas = [read_metadata(p) for p in paths]
    first = models[0]
    said = [os.fspath(ref) for ref in inputs]  # as the caller named them
    for ref, model, meta in zip(said[1:], models[1:], metas[1:], strict=True):
        if model.arch != first.arch or model.config_dict() != first.config_dict():
            raise WeightsError(f"{ref} is another architecture or config than {said[0]}")
        if meta.get("model") != metas[0].get("model"):
            raise WeightsError(
                f"{ref} holds {meta.get('model') or 'no named variant'}, "
                f"{said[0]} {metas[0].get('model') or 'no named variant'}"
            )

    states = [m.state_dict() for m in models]
    averaged: dict[str, torch.Tensor] = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            mean = sum(s[key].double() * w for s, w in zip(states, shares, strict=True))
            averaged[key] = mean.to(value.dtype)
        elif key.endswith("num_batches_tracked"):
            # BatchNorm's count of batches seen differs between any two points of a run; it
            # only steers a momentum-free running mean. The longest history is the one kept.
            averaged[key] = torch.stack([s[key] for s in states]).max()
        elif all(torch.equal(s[key], value) for s in states[1:]):
            averaged[key] = value
        else:
            raise WeightsError(f"integer tensor {key} differs between the checkpoints")
    first.load_state_dict(averaged)

    # Equal shares: the facts of the input furthest along in training (a later stage's recipe,
    # not the starting point's), whichever order the files were given in.
    trainings = [_training(m) for m in metas]
    heaviest = max(range(len(paths)), key=lambda i: (shares[i], _total(trainings[i], "steps") or 0))
    facts = _facts(paths, trainings, shares, heaviest)
    trained_for = sorted({k for m in metas for k in metadata_list(m.get("trained_for"))})
    extra: dict[str, Any] = {"training": facts}
    if "model" in metas[0]:
        extra["model"] = metas[0]["model"]
    if trained_for:
        extra["trained_for"] = trained_for
    path = save_checkpoint(first, output, name=metas[0].get("name"), dtype=torch_dtype, extra=extra)
    return path, facts


def _facts(
    paths: list[Path], trainings: list[dict[str, Any]], shares: list[float], heaviest: int
) -> dict[str, Any]:
    """The heaviest input's training facts, the largest totals, and what was averaged.

    Not its validation PSNR (the average was never validated), and whether EMA weights went
    in only where every input agrees.
    """
    facts = dict(trainings[heaviest])
    facts.pop("val_psnr", None)
    if len({json.dumps(t.get("ema")) for t in trainings}) > 1:
        facts.pop("ema", None)
    for key in _TOTALS:
        numbers = [v for v in (_total(t, key) for t in trainings) if v is not None]
        if numbers:
            facts[f"{key}_total"] = max(numbers)
    facts["averaged_from"] = [p.name for p in paths]
    facts["averaged_from_sha256"] = [sha256_file(p) for p in paths]
    facts["average_shares"] = [round(s, 6) for s in shares]
    return facts


def _total(training: dict[str, Any], key: str) -> int | float | None:
    """``key`` over the whole training history (``<key>_total``, else the last stage's)."""
    value = training.get(f"{key}_total", training.get(key))
    return value if isinstance(value, (int, float)) else None


def _training(meta: dict[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(meta.get("training", "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
