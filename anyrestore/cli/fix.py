"""``anyrestore fix``: restore one image (file or stdin) to a file or stdout."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from anyrestore.cli.common import (
    check_finite,
    err_console,
    load_model,
    make_restorer,
    setup_logging,
    stdin_bytes,
    tile_progress,
    weights_label,
)
from anyrestore.cli.errors import emit, say
from anyrestore.cli.options import (
    AllowTruncatedOpt,
    DeviceOpt,
    FormatOpt,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    RuntimeOpt,
    StrengthOpt,
    ThreadsOpt,
    TileOpt,
    TileOverlapOpt,
    WeightsOpt,
)
from anyrestore.errors import InputError, UsageError


def _stdout_target(fmt: str | None, json_output: bool) -> str:
    from anyrestore.cli.errors import stdout
    from anyrestore.engine.imageio import parse_format

    if json_output:
        raise UsageError("--json cannot be combined with writing the image to stdout (-o -)")
    if stdout().isatty():
        raise UsageError(
            "refusing to write image bytes to a terminal; pass -o FILE or redirect stdout"
        )
    return parse_format(fmt) if fmt else "PNG"


def _names_stdout(output: str) -> bool:
    """``-o /dev/stdout`` (or ``/dev/fd/1``, or the file stdout goes to) is stdout itself.

    Written as a file, the image and the printed output path would share one stream.
    """
    if sys.stdout is None:
        return False
    try:
        named, ours = os.stat(output), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)


def _default_output(src: Path, fmt: str | None, source_format: str | None) -> Path:
    """``<stem>_restored.<ext>`` beside the input; ext from --format, else the input's."""
    from anyrestore.engine.imageio import FORMAT_EXTENSION, FORMATS, parse_format
    from anyrestore.files import IMAGE_EXTENSIONS

    if fmt:
        ext = FORMAT_EXTENSION[parse_format(fmt)]
    elif IMAGE_EXTENSIONS.get(src.suffix.lower()) in FORMATS:
        ext = src.suffix
    else:
        ext = FORMAT_EXTENSION.get(source_format or "PNG", ".png")
    return src.with_name(f"{src.stem}_restored{ext}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_source(source: str) -> Path:
    """The input path, refused early when missing, a folder, or not a regular file."""
    src = Path(source)
    try:
        info = src.stat()
    except FileNotFoundError:
        raise UsageError(f"input not found: {source}") from None
    except OSError as exc:
        raise UsageError(f"cannot open input {source}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{source} is a folder; use `anyrestore batch {source} -o OUTDIR`")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO with no writer would block forever; pipes go through `-` (stdin).
        raise InputError(f"{source}: not a regular file; pipe it into `anyrestore fix -` instead")
    return src


def _output_path(output: str, src: Path | None, fmt: str | None) -> Path:
    from anyrestore.engine.imageio import FORMAT_EXTENSION, parse_format

    out_path = Path(output)
    try:
        is_dir = out_path.is_dir()
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    # A trailing slash names a folder, made if it does not exist yet (as for -o new/x.png)
    if is_dir or output.endswith(("/", os.sep)):
        name = (
            src.name
            if src is not None
            else "restored" + FORMAT_EXTENSION[parse_format(fmt or "png")]
        )
        out_path = out_path / name
    return out_path


def _output_format(out_path: Path, fmt: str | None) -> str:
    """--format, else the output's extension; an extension naming another format is refused.

    Writing JPEG data into ``y.png`` would mislead every program that opens it later.
    """
    from anyrestore.engine.imageio import format_for_path, parse_format

    if fmt is None:
        return format_for_path(out_path)
    chosen = parse_format(fmt)
    try:
        named = parse_format(out_path.suffix) if out_path.suffix else chosen
    except UsageError:  # an extension that names no format (out.data): --format decides
        return chosen
    if named != chosen:
        raise UsageError(
            f"{out_path} names {named} but --format says {chosen}; make them agree or drop one"
        )
    return chosen


def fix_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="IN",
            help="Image to restore, or - to read stdin. A name starting with a dash goes "
            "after --: anyrestore fix -- -photo.jpg",
        ),
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
    runtime: RuntimeOpt = "auto",
    strength: StrengthOpt = 1.0,
    threads: ThreadsOpt = None,
    tile: TileOpt = None,
    tile_overlap: TileOverlapOpt = None,
    fmt: FormatOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow writing over IN itself.")
    ] = False,
    max_pixels: MaxPixelsOpt = None,
    allow_truncated: AllowTruncatedOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore one photo. `cat a.jpg | anyrestore fix - -o - > b.png` works too."""
    from anyrestore.engine.imageio import encode_image, parse_format, read_image
    from anyrestore.files import AtomicFile

    setup_logging(quiet)
    err = err_console(quiet)
    if max_pixels is not None and max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
    if fmt is not None:
        parse_format(fmt)  # fail before any work
    from_stdin = source == "-"
    src = None if from_stdin else _check_source(source)
    if output is None:
        to_stdout = from_stdin
    else:
        to_stdout = output == "-" or _names_stdout(output)
    out_path: Path | None = None
    out_format = "PNG"
    if to_stdout:
        out_format = _stdout_target(fmt, json_output)
    elif output is not None:
        out_path = _output_path(output, src, fmt)
        out_format = _output_format(out_path, fmt)

    start = time.perf_counter()
    data = stdin_bytes() if from_stdin else None
    if from_stdin and not data:
        raise UsageError("no image data on stdin")
    image = read_image(
        data if data is not None else src,  # type: ignore[arg-type]
        max_pixels=max_pixels,
        name=source,
        allow_truncated=allow_truncated,
    )
    if out_path is None and not to_stdout:
        assert src is not None
        out_path = _default_output(src, fmt, image.format)
        out_format = _output_format(out_path, fmt)
    if out_path is not None and src is not None and _same_file(out_path, src) and not overwrite:
        raise UsageError(f"refusing to overwrite the input {source}; pass --overwrite or choose -o")
    read_seconds = time.perf_counter() - start

    # The temporary output exists before any work, so an unwritable place fails at once.
    target = AtomicFile(out_path) if out_path is not None else None
    try:
        net, model_name, weights_name = load_model(model, weights)
        progress, on_tile = tile_progress(err)
        restorer = make_restorer(
            net, device, precision, tile, tile_overlap, on_tile, threads=threads, runtime=runtime
        )
        if not quiet:
            say(f"model {model_name} ({weights_name}) on {restorer.describe()}")
        start = time.perf_counter()
        with progress:
            restored = restorer.restore_image(image, strength)
        check_finite(restored.rgb, weights_label(weights, model))
        encoded = encode_image(restored, out_format)
        if target is None:
            emit(data=encoded)
        else:
            target.write(encoded)
        seconds = read_seconds + time.perf_counter() - start
        info = restorer.last_run
        tiles = info.tiles if info else 1
        shown = "-" if out_path is None else str(out_path)
        if json_output:
            record = {
                "input": source,
                "output": shown,
                "model": model_name,
                "weights": weights_name,
                "device": str(restorer.device),
                "precision": restorer.precision,
                "strength": strength,
                "compute": restorer.path.as_dict(),
                "tiles": tiles,
                "tile": info.tile if info else 0,
                "seconds": round(seconds, 3),
                "width": image.width,
                "height": image.height,
            }
            emit(json.dumps(record))
        elif out_path is not None:
            emit(str(out_path))
        # Only once stdout took the result: a full or closed stdout leaves no output behind.
        if target is not None:
            target.commit()
    except BaseException:
        if target is not None:
            target.discard()
        raise
    if not quiet:
        say(
            f"restored {source} -> {shown}: {image.width}x{image.height}, "
            f"{tiles} tile{'s' if tiles != 1 else ''}, "
            f"{'' if strength == 1.0 else f'strength {strength:g}, '}{seconds:.2f} s"
        )
