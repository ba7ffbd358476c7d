"""``anyrestore fix``: restore one image (file or stdin) to a file or stdout.

Also holds the options and helpers ``anyrestore batch`` shares: model loading, the restorer,
logging to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from anyrestore.cli.app import app
from anyrestore.cli.errors import handle_errors
from anyrestore.errors import UsageError

if TYPE_CHECKING:
    from anyrestore.engine import Restorer
    from anyrestore.models.base import RestorationModel

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model variant; loads its preferred weights (see `anyrestore models`).",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="A .safetensors checkpoint or a manifest entry name; wins over --model.",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", "-d", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision", help="auto (fp16 on CUDA, fp32 elsewhere), fp32, fp16 or bf16."),
]
TileOpt = Annotated[
    int | None,
    typer.Option(
        "--tile",
        help="Tile size in pixels; 0 disables tiling. Default: auto (see docs/inference.md).",
    ),
]
OverlapOpt = Annotated[
    int | None,
    typer.Option(
        "--tile-overlap", help="Overlap between tiles in pixels. Default: the model's hint."
    ),
]
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        envvar="ANYRESTORE_MAX_PIXELS",
        help="Refuse images with more pixels than this (decompression-bomb guard). Default: 100000000.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or info on stderr; errors still.")
]


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"anyrestore: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("anyrestore")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)


def _variant_of(model: RestorationModel) -> str | None:
    """The registered variant whose architecture and config the model has, if any."""
    from anyrestore.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        if spec.arch == model.arch and spec.config == model.config:
            return name
    return None


def _declared_variant(weights: str) -> str | None:
    """The variant a weights reference says it holds (manifest entry or file metadata)."""
    from anyrestore.weights import entry_for, read_metadata

    if Path(weights).is_file():
        return read_metadata(weights).get("name")
    return entry_for(weights).model


def load_model(model_name: str | None, weights: str | None) -> tuple[RestorationModel, str]:
    """Load weights once: ``--weights`` wins, ``--model`` must then name the same variant."""
    from anyrestore.models import get_spec
    from anyrestore.weights import load_weights

    if model_name is not None:
        try:
            get_spec(model_name)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
    model = load_weights(weights if weights is not None else model_name)
    variant = _variant_of(model)
    if weights is not None and model_name is not None:
        declared = _declared_variant(weights)
        if model_name not in (variant, declared):
            holds = variant or declared or f"a custom {model.arch} config"
            raise UsageError(
                f"--model {model_name} does not match --weights {weights}, which holds {holds}"
            )
    name = model_name or variant or (_declared_variant(weights) if weights else None) or model.arch
    return model, name


def make_restorer(
    model: RestorationModel,
    device: str,
    precision: str,
    tile: int | None,
    overlap: int | None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Restorer:
    from anyrestore.engine import Restorer

    return Restorer(model, device, precision, tile=tile, overlap=overlap, on_tile=on_tile)


def tile_progress(console: Console) -> tuple[Progress, Callable[[int, int], None]]:
    """A transient stderr progress bar over the tiles of one image, and its callback."""
    progress = Progress(
        TextColumn("tiles"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=console.quiet or not console.is_terminal,
    )
    task = progress.add_task("tiles", total=None, visible=False)

    def on_tile(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total, visible=True)

    return progress, on_tile


def _stdout_target(fmt: str | None, json_output: bool) -> str:
    from anyrestore.engine.imageio import parse_format

    if json_output:
        raise UsageError("--json cannot be combined with writing the image to stdout (-o -)")
    if sys.stdout.isatty():
        raise UsageError(
            "refusing to write image bytes to a terminal; pass -o FILE or redirect stdout"
        )
    return parse_format(fmt) if fmt else "PNG"


def _default_output(src: Path, fmt: str | None, source_format: str | None) -> Path:
    """``<stem>_restored.<ext>`` beside the input; ext from --format, else the input's."""
    from anyrestore.engine.imageio import EXTENSIONS, FORMAT_EXTENSION, parse_format

    if fmt:
        ext = FORMAT_EXTENSION[parse_format(fmt)]
    elif src.suffix.lower() in EXTENSIONS:
        ext = src.suffix
    else:
        ext = FORMAT_EXTENSION.get(source_format or "PNG", ".png")
    return src.with_name(f"{src.stem}_restored{ext}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@app.command("fix")
@handle_errors
def fix_command(
    source: Annotated[
        str, typer.Argument(metavar="IN", help="Image to restore, or - to read stdin.")
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT",
            help="Output file (format from its extension), a folder, or - for stdout. "
            "Default: <stem>_restored.<ext> beside IN (stdout when IN is -).",
        ),
    ] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = None,
    tile_overlap: OverlapOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Output format: png, jpg, webp, tif or bmp."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow writing over IN itself.")
    ] = False,
    max_pixels: MaxPixelsOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore one photo. `cat a.jpg | anyrestore fix - -o - > b.png` works too."""
    from anyrestore.engine.imageio import (
        FORMAT_EXTENSION,
        atomic_write,
        encode_image,
        format_for_path,
        parse_format,
        read_image,
    )

    setup_logging(quiet)
    err = Console(stderr=True, quiet=quiet)
    if max_pixels is not None and max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
    if fmt is not None:
        parse_format(fmt)  # fail before any work
    from_stdin = source == "-"
    src = None if from_stdin else Path(source)
    if src is not None:
        if not src.exists():
            raise UsageError(f"input not found: {source}")
        if src.is_dir():
            raise UsageError(f"{source} is a folder; use `anyrestore batch {source} -o OUTDIR`")
    to_stdout = output == "-" or (output is None and from_stdin)
    out_path: Path | None = None
    if to_stdout:
        out_format = _stdout_target(fmt, json_output)
    elif output is not None:
        out_path = Path(output)
        if out_path.is_dir():
            out_path = out_path / (
                src.name
                if src is not None
                else "restored" + FORMAT_EXTENSION[parse_format(fmt or "png")]
            )
        out_format = parse_format(fmt) if fmt else format_for_path(out_path)

    start = time.perf_counter()
    data = sys.stdin.buffer.read() if from_stdin else None
    if from_stdin and not data:
        raise UsageError("no image data on stdin")
    image = read_image(data if data is not None else src, max_pixels=max_pixels, name=source)  # type: ignore[arg-type]
    if out_path is None and not to_stdout:
        assert src is not None
        out_path = _default_output(src, fmt, image.format)
        out_format = parse_format(fmt) if fmt else format_for_path(out_path)
    if out_path is not None and src is not None and _same_file(out_path, src) and not overwrite:
        raise UsageError(f"refusing to overwrite the input {source}; pass --overwrite or choose -o")
    read_seconds = time.perf_counter() - start

    net, model_name = load_model(model, weights)
    progress, on_tile = tile_progress(err)
    restorer = make_restorer(net, device, precision, tile, tile_overlap, on_tile)
    err.print(f"model {model_name} on {restorer.describe()}", highlight=False)
    start = time.perf_counter()
    with progress:
        restored = restorer.restore_image(image)
    encoded = encode_image(restored, out_format)
    if out_path is None:
        sys.stdout.buffer.write(encoded)
        sys.stdout.buffer.flush()
    else:
        atomic_write(out_path, encoded)
    seconds = read_seconds + time.perf_counter() - start
    info = restorer.last_run
    tiles = info.tiles if info else 1
    shown = "-" if out_path is None else str(out_path)
    if json_output:
        print(
            json.dumps(
                {
                    "input": source,
                    "output": shown,
                    "model": model_name,
                    "weights": weights or model or "default",
                    "device": str(restorer.device),
                    "precision": restorer.precision,
                    "tiles": tiles,
                    "tile": info.tile if info else 0,
                    "seconds": round(seconds, 3),
                    "width": image.width,
                    "height": image.height,
                }
            )
        )
    elif out_path is not None:
        print(out_path)
    err.print(
        f"restored {source} -> {shown}: {image.width}x{image.height}, "
        f"{tiles} tile{'s' if tiles != 1 else ''}, {seconds:.2f} s",
        highlight=False,
    )
