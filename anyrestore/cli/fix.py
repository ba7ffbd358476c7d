"""``anyrestore fix``: restore an image (file or stdin) to a file or stdout, or several files."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anyrestore.cli.common import (
    STOPS_THE_RUN,
    blames_the_file,
    compute_record,
    drain_stdin,
    err_console,
    failed_record,
    failure_line,
    load_model,
    make_restorer,
    naming_weights,
    setup_logging,
    stdin_bytes,
    stdin_file_key,
    tile_progress,
    warn_lossless,
    weights_label,
)
from anyrestore.cli.errors import StdoutError, emit, fail, say, stdout
from anyrestore.cli.options import (
    AllowTruncatedOpt,
    DeviceOpt,
    FormatOpt,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    PrecisionOpt,
    QualityOpt,
    QuietOpt,
    RuntimeOpt,
    SkipExistingOpt,
    StrengthOpt,
    ThreadsOpt,
    TileOpt,
    TileOverlapOpt,
    WeightsOpt,
)
from anyrestore.errors import ExitCode, InputError, UsageError
from anyrestore.files import FileKey, file_key

if TYPE_CHECKING:
    from rich.console import Console

    from anyrestore.engine import Restorer


class _OptionClash(UsageError):
    """Options that no input could satisfy (``--json`` with image bytes on stdout, ``-o y.png
    --format jpg``): a run that cannot start, so ``--json`` prints no record for it."""


def _stdout_target(fmt: str | None, json_output: bool) -> str:
    from anyrestore.engine.imageio import parse_format

    if json_output:
        raise _OptionClash(
            "--json cannot be combined with writing the image to stdout (-o -, or stdin "
            "without -o); pass -o FILE"
        )
    if stdout().isatty():
        raise UsageError(
            "refusing to write image bytes to a terminal; pass -o FILE or redirect stdout"
        )
    return parse_format(fmt) if fmt else "PNG"


def _about_stdout(exc: BaseException) -> bool:
    """A reader that went away (a quiet end) or a stdout that cannot take the results."""
    return isinstance(exc, (BrokenPipeError, StdoutError))


def _names_stdout(output: str) -> bool:
    """``-o /dev/stdout`` (or ``/dev/fd/1``, or the file stdout goes to) is stdout itself.

    Written as a file, the image and the printed output path would share one stream. A
    device other than a terminal (``-o /dev/null`` with stdout there too) is just written.
    """
    if sys.stdout is None:
        return False
    try:
        named, ours = os.stat(output), os.fstat(fd := sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    if stat.S_ISCHR(named.st_mode) and not os.isatty(fd):
        return False
    return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)


def _named_output(
    src: Path, folder: Path, suffix: str, fmt: str | None, source_format: str | None
) -> Path:
    """``<stem><suffix>.<ext>`` in ``folder``: ext from --format, else the input's own when
    anyrestore writes that format, else the format the input was read as (PNG for one it
    only reads, such as PPM, or AVIF where Pillow cannot write it)."""
    from anyrestore.engine.imageio import EXTENSIONS, FORMAT_EXTENSION, can_write, parse_format

    if fmt:
        ext = FORMAT_EXTENSION[parse_format(fmt)]
    elif src.suffix.lower() in EXTENSIONS:
        ext = src.suffix
    else:
        ext = FORMAT_EXTENSION[source_format] if can_write(source_format) else ".png"
    return folder / f"{src.stem}{suffix}{ext}"


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


def _output_folder(output: str) -> Path | None:
    """The folder ``-o`` names (an existing one, or any path ending in a slash, made when
    missing, as for -o new/x.png), or None when it names a file."""
    out_path = Path(output)
    try:
        is_dir = out_path.is_dir()
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    return out_path if is_dir or output.endswith(("/", os.sep)) else None


def _output_format(out_path: Path, fmt: str | None) -> str:
    """--format, else the output's extension; an extension naming another format is refused.

    Writing JPEG data into ``y.png`` would mislead every program that opens it later.
    """
    from anyrestore.engine.imageio import format_for_path, parse_format
    from anyrestore.files import is_stream

    if fmt is None:
        if not out_path.suffix and is_stream(out_path):  # a pipe or device: PNG, as stdout
            return "PNG"
        return format_for_path(out_path)
    chosen = parse_format(fmt)
    try:
        named = parse_format(out_path.suffix) if out_path.suffix else chosen
    except UsageError:  # one we do not write: refused if it names an image format (out.gif)
        from PIL import Image

        named = Image.registered_extensions().get(out_path.suffix.lower(), chosen)
        named = "BMP" if named == "DIB" else named  # .dib: a BMP by another name
    if named != chosen:
        raise _OptionClash(
            f"{out_path} names {named} but --format says {chosen}; make them agree or drop one"
        )
    return chosen


@dataclass
class _Run:
    """What every input of one ``fix`` shares: its options, and the model, loaded once."""

    model: str | None
    weights: str | None
    device: str
    precision: str
    runtime: str
    strength: float
    threads: int | None
    tile: int | None
    tile_overlap: int | None
    fmt: str | None
    quality: int | None
    overwrite: bool
    skip_existing: bool
    max_pixels: int | None
    allow_truncated: bool
    json_output: bool
    quiet: bool
    err: Console
    several: bool = False
    warned: set[str] = field(default_factory=set, repr=False)  # formats --quality missed
    loaded: tuple[Restorer, str, str] | None = field(default=None, repr=False)
    #: Loading the model failed: a fault of the run's options or weights, not of a file.
    load_failed: bool = field(default=False, repr=False)

    def restorer(self) -> tuple[Restorer, str, str]:
        """The restorer, its variant and weights' names, loaded once: for one input after it
        was read (a bad input fails before seconds of loading), for several before the first
        (a bad option fails once, not for every file)."""
        if self.loaded is None:
            try:
                net, model_name, weights_name = load_model(self.model, self.weights)
                restorer = make_restorer(
                    net,
                    self.device,
                    self.precision,
                    self.tile,
                    self.tile_overlap,
                    threads=self.threads,
                    runtime=self.runtime,
                )
            except Exception:
                self.load_failed = True
                raise
            if not self.quiet:
                say(f"model {model_name} ({weights_name}) on {restorer.describe()}")
            self.loaded = (restorer, model_name, weights_name)
        return self.loaded


def _restore_file(
    run: _Run,
    source: str,
    output: str | None,
    taken: set[FileKey],
    written: set[FileKey],
) -> str:
    """Restore ``source`` to ``output`` (a file, a folder, ``-`` or None for the default);
    returns "ok", or "skipped" when --skip-existing finds the output there already.

    ``taken``: the real paths of every input and of the outputs already written, which an
    output must not land on (its own input only with --overwrite); ``written``: those
    outputs alone, which --skip-existing must not take for results of an earlier run.
    """
    from anyrestore.engine.imageio import (
        EXTENSIONS,
        FORMAT_EXTENSION,
        LOSSY_FORMATS,
        check_encodable,
        encode_image,
        parse_format,
        read_image,
    )
    from anyrestore.files import AtomicFile

    from_stdin = source == "-"
    src = None if from_stdin else _check_source(source)
    if output is None:
        to_stdout = from_stdin
    else:
        to_stdout = output == "-" or _names_stdout(output)
    out_path: Path | None = None
    folder: Path | None = None
    out_format = "PNG"
    if to_stdout:
        out_format = _stdout_target(run.fmt, run.json_output)
    elif output is not None:
        folder = _output_folder(output)
        if folder is None:
            out_path = Path(output)
        elif src is None:  # stdin has no name to keep
            out_path = folder / ("restored" + FORMAT_EXTENSION[parse_format(run.fmt or "png")])

    def named_after_input(source_format: str | None) -> Path:
        assert src is not None
        if folder is None:
            return _named_output(src, src.parent, "_restored", run.fmt, source_format)
        return _named_output(src, folder, "", run.fmt, source_format)

    def skip() -> bool:
        """--skip-existing and the output is there: reported, and nothing more to do."""
        if not (run.skip_existing and out_path is not None and os.path.lexists(out_path)):
            return False
        if file_key(out_path) in written:
            return False  # this run's own output, not an earlier result: the clash fails below
        if from_stdin:  # read what is piped in: unread, its writer dies of SIGPIPE (141)
            drain_stdin(run.max_pixels)
        if run.json_output:
            emit(json.dumps({"input": source, "output": str(out_path), "status": "skipped"}))
        elif not run.quiet:
            say(f"skipped {source}: {out_path} exists")
        return True

    # The output's name needs the decoded format only for an input whose extension names no
    # format anyrestore writes; otherwise a finished output is skipped without reading.
    if out_path is None and src is not None and not to_stdout:
        if run.fmt or src.suffix.lower() in EXTENSIONS:
            out_path = named_after_input(None)
    if out_path is not None:
        out_format = _output_format(out_path, run.fmt)
    if skip():
        return "skipped"
    if from_stdin and out_path is not None and not run.overwrite:
        read_from = stdin_file_key()  # `fix - -o photo.jpg < photo.jpg`
        if read_from is not None and read_from == file_key(out_path):
            raise UsageError(
                f"refusing to overwrite the input (stdin reads {out_path}); pass --overwrite "
                "or choose -o"
            )

    start = time.perf_counter()
    data = stdin_bytes(run.max_pixels) if from_stdin else None
    if from_stdin and not data:
        raise UsageError("no image data on stdin")
    image = read_image(
        data if data is not None else src,  # type: ignore[arg-type]
        max_pixels=run.max_pixels,
        name=source,
        allow_truncated=run.allow_truncated,
    )
    if out_path is None and not to_stdout:
        out_path = named_after_input(image.format)
        out_format = _output_format(out_path, run.fmt)
        if skip():
            return "skipped"
    check_encodable(image.width, image.height, out_format)  # before minutes of restoring
    if run.quality is not None and out_format not in LOSSY_FORMATS | run.warned:
        run.warned.add(out_format)
        if not run.quiet:
            warn_lossless([out_format])
    if out_path is not None and src is not None:
        if _same_file(out_path, src):
            if not run.overwrite:
                raise UsageError(
                    f"refusing to overwrite the input {source}; pass --overwrite or choose -o"
                )
        elif file_key(out_path) in taken:
            raise UsageError(
                f"{source}: its output {out_path} is another input or output of this run"
            )
    read_seconds = time.perf_counter() - start

    # The temporary output exists before any work, so an unwritable place fails at once;
    # discarding it also removes the folders made for it.
    target = AtomicFile(out_path) if out_path is not None else None
    try:
        restorer, model_name, weights_name = run.restorer()
        progress, restorer.on_tile = tile_progress(run.err)
        start = time.perf_counter()
        with progress, naming_weights(weights_label(run.weights, run.model)):
            restored = restorer.restore_image(image, run.strength)
        encoded = encode_image(restored, out_format, quality=run.quality)
        if target is None:
            emit(data=encoded)
        else:
            target.write(encoded)
            # In place before it is announced: a reader acting on the line finds the file.
            target.commit()
            taken.add(file_key(target.path))
            written.add(file_key(target.path))
        seconds = read_seconds + time.perf_counter() - start
        info = restorer.last_run
        tiles = info.tiles if info else 1
        shown = "-" if out_path is None else str(out_path)
        if run.json_output:
            compute = compute_record(restorer)
            record = {
                "input": source,
                "output": shown,
                "status": "ok",
                "model": model_name,
                "weights": weights_name,
                "device": str(restorer.device),
                "precision": compute["precision"],  # what gave this output (eager fp32 too)
                "strength": run.strength,
                "compute": compute,
                "tiles": tiles,
                "tile": info.tile if info else 0,
                "seconds": round(seconds, 3),
                "width": image.width,
                "height": image.height,
            }
            emit(json.dumps(record))
        elif out_path is not None:
            emit(str(out_path))
    except BaseException:
        if target is not None:
            target.discard()
        raise
    if not run.quiet:
        say(
            f"restored {source} -> {shown}: {image.width}x{image.height}, "
            f"{tiles} tile{'s' if tiles != 1 else ''}, "
            f"{'' if run.strength == 1.0 else f'strength {run.strength:g}, '}{seconds:.2f} s"
        )
    return "ok"


def _restore_several(run: _Run, sources: list[str], output: str | None) -> None:
    """Each input in turn, like ``batch``: a failing file is reported and the others still run."""
    if "-" in sources:
        raise UsageError("stdin (-) can only be restored alone")
    if output is not None:
        if output == "-" or _names_stdout(output):
            raise UsageError("several inputs cannot all go to stdout; -o names a folder")
        if not (os.path.isdir(output) or output.endswith(("/", os.sep))):
            raise UsageError(
                f"with several inputs, -o names a folder: {output} is not one "
                "(end it with / to have it made)"
            )
    taken = {file_key(s) for s in sources}
    written: set[FileKey] = set()
    stdout()  # a closed stdout (each output's line goes there) stops the run once, exit 2
    run.restorer()  # a bad option or weights stop the run here, not once per file
    failed = skipped = 0
    started = time.perf_counter()
    for source in sources:
        try:
            skipped += _restore_file(run, source, output, taken, written) == "skipped"
        except STOPS_THE_RUN as exc:
            failed += blames_the_file(exc)  # its record says failed too
            if run.json_output and blames_the_file(exc):
                failed_record(source, exc)
            if not run.quiet and not _about_stdout(exc):  # what is done, before the why
                say(  # written: counted as each output lands
                    f"stopped: {len(written)} restored, "
                    f"{f'{skipped} skipped, ' if run.skip_existing else ''}{failed} failed, "
                    f"{len(sources) - len(written) - failed - skipped} not restored in "
                    f"{time.perf_counter() - started:.1f} s"
                )
            raise
        except Exception as exc:  # one bad file must not stop the others
            failed += 1
            message = failure_line(source, exc)
            say(f"failed {message}")
            if run.json_output:
                emit(json.dumps({"input": source, "status": "failed", "error": message}))
    if not run.quiet or failed:
        say(
            f"{len(sources) - failed - skipped} restored, "
            f"{f'{skipped} skipped, ' if run.skip_existing else ''}{failed} failed "
            f"in {time.perf_counter() - started:.1f} s"
        )
    if failed:
        fail(f"{failed} of {len(sources)} files failed", ExitCode.FAILED)


def fix_command(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="IN",
            help="Images to restore, or - to read stdin. A name starting with a dash goes "
            "after --: anyrestore fix -- -photo.jpg",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT",
            help="Output file (format from its extension), a folder, or - for stdout; a "
            "folder for several INs. Default: <stem>_restored.<ext> beside each IN (stdout "
            "when IN is -).",
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
    quality: QualityOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow writing over IN itself.")
    ] = False,
    skip_existing: SkipExistingOpt = False,
    max_pixels: MaxPixelsOpt = None,
    allow_truncated: AllowTruncatedOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore photos: one to a file or stdout, several beside themselves or into a folder.

    `cat a.jpg | anyrestore fix - -o - > b.png` works too. With several INs a failing file is
    reported and the others still run (exit 1 if any failed).
    """
    from anyrestore.engine.imageio import parse_format

    setup_logging(quiet)
    if max_pixels is not None and max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
    if fmt is not None:
        parse_format(fmt)  # fail before any work
    run = _Run(
        model=model,
        weights=weights,
        device=device,
        precision=precision,
        runtime=runtime,
        strength=strength,
        threads=threads,
        tile=tile,
        tile_overlap=tile_overlap,
        fmt=fmt,
        quality=quality,
        overwrite=overwrite,
        skip_existing=skip_existing,
        max_pixels=max_pixels,
        allow_truncated=allow_truncated,
        json_output=json_output,
        quiet=quiet,
        err=err_console(quiet),
        several=len(sources) > 1,
    )
    if run.several:
        _restore_several(run, sources, output)
        return
    if output != "-":
        stdout()  # the output's line goes there: a closed stdout stops the run before the work
    try:
        _restore_file(run, sources[0], output, set(), set())
    except Exception as exc:
        # The same record a failing file gets among several; a bad option or weights stop
        # the run before any file there, and get only the error line here too.
        if run.json_output and not run.load_failed and not isinstance(exc, _OptionClash):
            if not isinstance(exc, STOPS_THE_RUN) or blames_the_file(exc):
                failed_record(sources[0], exc)
        raise
