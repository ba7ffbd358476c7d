"""Turn a resume checkpoint into an inference checkpoint (safetensors + metadata).

The file written rebuilds its model alone (architecture config in the metadata, through
``anyrestore.weights.checkpoint.save_checkpoint``) and carries the facts
``anyrestore weights add`` puts into ``weights_manifest.toml``: ``model``, ``trained_for``
and a ``training`` object (steps, samples, data, recipe hash, hardware, wall time, date, PSNR).
A run that started from another checkpoint (``train.init_from``) also names that file and adds
its totals, so a checkpoint trained in stages says how much training it had in all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from anyrestore.data.degradations import TRAINING_ONLY
from anyrestore.errors import ConfigError, UsageError, WeightsError
from anyrestore.models.registry import build_model
from anyrestore.training.config import Config, load_config, recorded_config, resolve
from anyrestore.training.state import load_state, resolve_resume
from anyrestore.weights.checkpoint import (
    check_output_name,
    load_state_strict,
    read_metadata,
    save_checkpoint,
)
from anyrestore.weights.resolve import resolve_weights, sha256_file

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    dtype: str = "fp16",
    use_ema: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Write ``output`` from the training checkpoint; returns the path and its training facts.

    The EMA weights are written when the run kept an EMA (and ``use_ema``), else the raw ones.
    """
    torch_dtype = weight_dtype(dtype)
    check_output_name(output, "the exported weights")
    state = load_state(checkpoint)
    if Path(output).exists() and os.path.samefile(output, resolve_resume(checkpoint)):
        raise UsageError(f"{output} is the checkpoint being exported; write the weights elsewhere")
    model = build_model(state["arch"], state["model_config"])
    ema = state.get("ema") if use_ema else None
    # Every key and shape checked, named if they differ (a run of an older model layout)
    load_state_strict(model, ema["model"] if ema else state["model"], source=str(checkpoint))
    facts = training_facts(state, ema_used=bool(ema))
    path = save_checkpoint(
        model,
        output,
        name=state["model_name"],
        dtype=torch_dtype,
        extra={
            "model": state["model_name"],
            # what it restores: training-only kinds (identity pairs, slight blur) are in
            # facts["kinds"], not here
            "trained_for": [k for k in facts["kinds"] if k not in TRAINING_ONLY],
            "training": facts,
        },
    )
    return path, facts


def weight_dtype(name: str) -> torch.dtype:
    """The torch dtype an exported file's weights are written in, by its CLI name."""
    if name not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def training_facts(state: dict[str, Any], *, ema_used: bool) -> dict[str, Any]:
    """The plain facts about how a checkpoint was trained (flat, TOML-friendly values)."""
    config = load_config(None, base=recorded_config(state["config_toml"]))
    recipe = resolve(config, state["arch"])
    progress = state["progress"]
    loss = " + ".join(f"{w:g}*{name}" for name, w in recipe.terms().items() if w)
    if recipe.aux:
        loss += " + model aux"
    facts: dict[str, Any] = {
        "model": state["model_name"],
        "steps": progress["step"],
        "total_steps": state["total_steps"],
        "epochs_completed": progress["epoch"],
        "samples_seen": progress["samples"],
        "batch_size": config.train.batch_size,
        "crop": config.data.crop,
        "dataset": config.data.layout,
        "data_root": Path(config.data.root).name,
        "kinds": sorted(progress.get("kinds") or config.data.kinds),
        "lr": config.optim.lr,
        "optimizer": config.optim.name,
        "schedule": recipe.schedule,
        "loss": loss,
        "precision": state["precision"],
        "hardware": f"{state['world_size']} x {state['device']}",
        "wall_time_s": round(progress["wall_time"], 1),
        "date": state["date"],
        "ema": ema_used,
        "config_sha256": config.digest(),
        "torch": state.get("torch", torch.__version__),  # what trained it (older runs: here)
    }
    # Validation scores the EMA where the run kept one: not the raw weights --no-ema writes.
    if progress.get("val_psnr") is not None and (ema_used or state.get("ema") is None):
        facts["val_psnr"] = round(progress["val_psnr"], 3)
    if config.train.init_from:
        start = state.get("init_lineage") or start_lineage(config.train.init_from)
        facts.update(_with_totals(start, facts))
    if config.distill.teacher:
        facts["teacher"] = Path(config.distill.teacher).name
        facts["loss"] = _distill_loss(config, loss)
    return facts


def _distill_loss(config: Config, target_loss: str) -> str:
    """The loss of a distillation run, in the same notation as the recipe's."""
    d = config.distill
    terms = []
    if d.matches_output():
        terms.append(f"{d.output_weight:g}*teacher_output")
    if d.matches_blocks():
        forced = " (teacher-forced)" if d.teacher_forcing else ""
        terms.append(f"{d.block_weight:g}*teacher_blocks{forced}")
    if d.target_weight:
        instead = f", {d.teacher_kinds_phrase()}" if d.teacher_kinds else ""
        terms.append(f"{d.target_weight:g}*({target_loss}{instead})")
    return " + ".join(terms)


def start_lineage(ref: str) -> dict[str, Any]:
    """The checkpoint a run starts from: its name, sha256 and the training it had had.

    Recorded when the run starts (a file re-exported over the same path later is another
    start); read again at export only for runs saved before that was kept. The totals chain:
    a file that was itself trained in stages carries ``*_total`` facts, used instead of its
    own stage's. If the file has moved (or a weights name is no longer at hand: nothing is
    downloaded here), only its name is known.
    """
    lineage: dict[str, Any] = {"init_from": Path(ref).name}
    try:
        init = resolve_weights(ref, offline=True)
        before = json.loads(read_metadata(init).get("training", "{}"))
        lineage["init_from_sha256"] = sha256_file(init)
    except (WeightsError, OSError, ValueError):
        return lineage
    for key in ("steps", "samples_seen", "wall_time_s"):
        earlier = before.get(f"{key}_total", before.get(key))
        if isinstance(earlier, (int, float)):
            lineage[f"before_{key}"] = earlier
    return lineage


def _with_totals(start: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The start's name and hash, and the run's training added to what the start had had."""
    out = {k: v for k, v in start.items() if not k.startswith("before_")}
    for key in ("steps", "samples_seen", "wall_time_s"):
        earlier = start.get(f"before_{key}")
        if isinstance(earlier, (int, float)):
            total = earlier + facts[key]
            out[f"{key}_total"] = round(total, 1) if key == "wall_time_s" else total
    return out
