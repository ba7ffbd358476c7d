"""Options shared by the commands that restore images (fix, batch), defined once."""

from __future__ import annotations

from typing import Annotated

import typer

from anyrestore.choices import RUNTIMES, check_choice
from anyrestore.choices import check_strength as _check_strength


def source_of(ctx: typer.Context, name: str | None) -> str:
    """Where option ``name`` got its value: "COMMANDLINE", "ENVIRONMENT", "DEFAULT", ... ("" if
    unknown); typed options can then be told from defaults of the same value."""
    source = ctx.get_parameter_source(name) if name else None
    return getattr(source, "name", "")


def check_runtime(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Refuse an unknown runtime while parsing, naming ANYRESTORE_RUNTIME when the value came
    from there: an exported variable is easy to forget, and the option was never typed."""
    if value is None:
        return value
    given = f"{param.envvar}={value}" if source_of(ctx, param.name) == "ENVIRONMENT" else value
    check_choice(value, RUNTIMES, "runtime", given)
    return value


def check_strength(value: float) -> float:
    """--strength from 0 to 1, refused while parsing."""
    return _check_strength(value, "--strength")


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="Model variant (see `anyrestore models`); loads its preferred weights, or with "
        "--weights must name the variant those weights hold.",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        metavar="FILE|NAME",
        help="A .safetensors checkpoint or a manifest entry name (see `anyrestore weights list`).",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        metavar="DEVICE",
        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.",
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        metavar="auto|fp32|fp16|bf16",
        help="auto (CUDA: bf16 or fp16; CPU: bf16 where the CPU has native bf16 and a one-time "
        "measurement finds it faster, else fp32), fp32, fp16 or bf16.",
    ),
]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime",
        envvar="ANYRESTORE_RUNTIME",
        callback=check_runtime,
        metavar="auto|torch|openvino",
        help="auto (OpenVINO in bf16 where it is installed, the CPU has native bf16 and the "
        "precision is auto or bf16; else torch), "
        "torch or openvino (pip install openvino; anyir models).",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        metavar="N",
        help="CPU threads. Default: OMP_NUM_THREADS if set, else every core.",
    ),
]
QualityOpt = Annotated[
    int | None,
    typer.Option(
        "--quality",
        min=1,
        max=100,
        metavar="1-100",
        help="JPEG, WebP and AVIF quality, 1-100 (default 95; AVIF 90). PNG, TIFF and BMP are "
        "lossless.",
    ),
]
StrengthOpt = Annotated[
    float,
    typer.Option(
        "--strength",
        callback=check_strength,
        metavar="0-1",
        help="How much of the restoration to apply: 1 the model's output, 0 the photo as it "
        "was, 0.7 keeps some of the grain or haze.",
    ),
]
TileOpt = Annotated[
    int | None,
    typer.Option(
        "--tile",
        metavar="PX",
        help="Tile size in pixels, at least 32; 0 disables tiling. Images up to 1024 px (the "
        "models' statistics pass, at most 4 tiles a side) run whole. Default: auto (see "
        "docs/inference.md).",
    ),
]
TileOverlapOpt = Annotated[
    int | None,
    typer.Option(
        "--tile-overlap",
        metavar="PX",
        help="Overlap between tiles in pixels, at most half the tile. Default: the model's hint.",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format", "-f", metavar="FORMAT", help="Output format: png, jpg, webp, avif, tif or bmp."
    ),
]
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        envvar="ANYRESTORE_MAX_PIXELS",
        metavar="N",
        help="Refuse images with more pixels than this, checked before decoding "
        "(decompression-bomb guard). Default: 100000000.",
    ),
]
AllowTruncatedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-truncated",
        help="Restore an image whose data ends early (the missing part filled in, with a "
        "warning) instead of refusing it with exit 3.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.")]
SkipExistingOpt = Annotated[
    bool, typer.Option("--skip-existing", help="Leave outputs that already exist alone.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or info on stderr; errors still.")
]


def deprecated_alias(old: str, new: str, old_value: object, new_value: object) -> object:
    """The value of an option given under its old name, with a one-line warning."""
    if old_value is None:
        return new_value
    from anyrestore.cli.errors import say
    from anyrestore.errors import UsageError

    if new_value is not None:
        raise UsageError(f"{old} is the old name of {new}; give only {new}")
    say(f"anyrestore: warning: {old} is deprecated; use {new}")
    return old_value
