"""``anyrestore train``: train from a TOML recipe, resume, export and average inference weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from anyrestore.cli.errors import emit
from anyrestore.cli.options import source_of
from anyrestore.errors import UsageError

train_app = typer.Typer(
    help="Train a model from a TOML recipe (see configs/ and docs/training.md).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@train_app.callback()
def train_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", metavar="FILE", help="Recipe TOML (e.g. configs/anyir_three.toml)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a key, e.g. --set optim.lr=1e-4 (repeatable).",
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(metavar="N", help="Total optimizer steps (train.steps).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Run folder for checkpoints and logs (out).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or cuda:N (device).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="CHECKPOINT",
            help="Continue from a resume checkpoint (last.pt) or its run folder, writing "
            "there unless --out says otherwise.",
        ),
    ] = None,
    stop_at: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="STEP",
            help="Stop after this step with a resume checkpoint (schedule unchanged).",
        ),
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show the progress bar (log.progress).")] = True,
) -> None:
    """Train a model; with --resume, continue a run exactly where it stopped."""
    typed_progress = source_of(ctx, "progress") == "COMMANDLINE"
    if ctx.invoked_subcommand is not None:
        given = [
            flag
            for flag, value in (
                ("--config", config), ("--set", set_), ("--steps", steps), ("--out", out),
                ("--device", device), ("--resume", resume), ("--stop-at", stop_at or None),
                ("--progress" if progress else "--no-progress", typed_progress),
            )
            if value
        ]  # fmt: skip
        if given:  # they train; `export` and `average` would drop them without a word
            raise UsageError(
                f"{given[0]} is an option of `anyrestore train` itself, not of "
                f"`train {ctx.invoked_subcommand}`"
            )
        return
    if config is None and resume is None:
        raise UsageError("give --config FILE.toml (or --resume CHECKPOINT); see configs/")
    from anyrestore.training.config import load_config, recorded_config
    from anyrestore.training.loop import train
    from anyrestore.training.state import load_state, resolve_resume

    overrides = list(set_ or [])
    for key, value in (("train.steps", steps), ("out", out), ("device", device)):
        if value is not None:
            overrides.append(f"{key}={_toml_literal(value)}")
    if typed_progress or not progress:  # typed: also over what a resumed run recorded
        overrides.append(f"log.progress={'true' if progress else 'false'}")
    base = None
    if (
        resume is not None
        and out is None
        and not any(o.split("=", 1)[0].strip() == "out" for o in overrides)
    ):
        # The run goes on where its checkpoint is (a copied or moved run folder too), not in
        # the recipe's `out`, which may be relative to wherever the run was started.
        # realpath: through a link to a run's last.pt, the run it links to
        checkpoint = Path(os.path.realpath(resolve_resume(resume)))
        overrides.append(f"out={_toml_literal(checkpoint.parent)}")
    if resume is not None and config is None:
        base = recorded_config(load_state(resume)["config_toml"])
    cfg = load_config(config, overrides, base=base)
    result = train(cfg, resume=resume, stop_at=stop_at)
    if result.is_main:
        emit(str(result.checkpoint))


@train_app.command("export")
def export_command(
    checkpoint: Annotated[
        Path,
        typer.Argument(metavar="CHECKPOINT", help="Resume checkpoint (last.pt) or run folder."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="The .safetensors file to write.")
    ],
    dtype: Annotated[
        str, typer.Option(metavar="fp16|bf16|fp32", help="Weight dtype: fp16, bf16 or fp32.")
    ] = "fp16",
    ema: Annotated[bool, typer.Option(help="Write the EMA weights when the run kept them.")] = True,
) -> None:
    """Write inference weights (safetensors, config and training facts in the metadata)."""
    from anyrestore.training.export import export_checkpoint

    path, facts = export_checkpoint(checkpoint, output, dtype=dtype, use_ema=ema)
    typer.echo(f"exported {facts['model']} at step {facts['steps']} ({dtype}) to {path}", err=True)
    emit(str(path))


@train_app.command("average")
def average_command(
    checkpoints: Annotated[
        list[str],
        typer.Argument(
            metavar="CHECKPOINT",
            help="Two or more checkpoints of one model: .safetensors files or weights names "
            "(anyrestore weights list).",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="The .safetensors file to write.")
    ],
    shares: Annotated[
        str | None,
        typer.Option(
            "--shares",
            metavar="SHARES",
            help="Each checkpoint's share, comma-separated, e.g. 0.8,0.2 (normalised to sum "
            "1). Default: equal.",
        ),
    ] = None,
    dtype: Annotated[
        str, typer.Option(metavar="fp16|bf16|fp32", help="Weight dtype: fp16, bf16 or fp32.")
    ] = "fp16",
) -> None:
    """Write the weighted mean of checkpoints' weights (e.g. the ends of training stages)."""
    from anyrestore.training.average import average_checkpoints

    path, _ = average_checkpoints(
        checkpoints, output, shares=_numbers(shares) if shares else None, dtype=dtype
    )
    names = ", ".join(str(p) for p in checkpoints)
    typer.echo(f"averaged {names} ({dtype}) into {path}", err=True)
    emit(str(path))


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--shares takes comma-separated numbers, got {text!r}") from None


def _toml_literal(value: object) -> str:
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
