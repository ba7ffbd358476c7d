"""What the restoring commands (fix, batch) share: logging, loading the model, the restorer."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from anyrestore.cli.errors import StdoutError, as_flags, emit, say, stdout
from anyrestore.errors import (
    DeviceError,
    InputError,
    NonFiniteOutput,
    OutputFull,
    UsageError,
    WeightsError,
)
from anyrestore.files import FileKey

if TYPE_CHECKING:
    from anyrestore.engine import Restorer
    from anyrestore.models.base import RestorationModel


class _StderrHandler(logging.Handler):
    """One line per record on whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        say(f"anyrestore: {record.levelname.lower()}: {record.getMessage()}")


def setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("anyrestore")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)


def err_console(quiet: bool = False) -> Console:
    """Stderr for progress and info; lines are never wrapped, whatever the terminal width."""
    return Console(stderr=True, quiet=quiet, soft_wrap=True, highlight=False, markup=False)


def print_table(table: RenderableType) -> None:
    """A table on stdout, written through ``emit`` like every result line: a reader that left
    (``| head``) ends the command quietly and a full disk is exit 2, where Rich's own writing
    exits 1 without a word. In a file or pipe it takes the width it needs (``COLUMNS``, when
    set, wins) rather than 80 columns, so no figure is cut. File names are text: as Rich
    markup, ``a[raw].png`` would print as ``a.png``."""
    out = stdout()
    try:
        terminal = out.isatty()
    except (AttributeError, ValueError):
        terminal = False
    real = Console(file=out, markup=False)  # how Rich sees stdout; nothing is written to it
    rendered = io.StringIO()
    Console(
        file=rendered,
        markup=False,
        width=real.width if terminal or os.environ.get("COLUMNS") else 1000,
        force_terminal=terminal,
        color_system=real.color_system if terminal else None,
    ).print(table)
    emit(rendered.getvalue().rstrip("\n"))


def weights_label(weights: str | None, model_name: str | None) -> str:
    """How messages name the weights in use."""
    return weights or model_name or "the default weights"


def load_model(model_name: str | None, weights: str | None) -> tuple[RestorationModel, str, str]:
    """Load weights once: --weights wins, and --model must then name the variant they hold.

    Returns the model, its variant name and the weights' name (the manifest entry, or the
    file given), so a run's record says which checkpoint restored it.
    """
    from anyrestore.models import get_spec
    from anyrestore.weights import load_weights

    spec = None
    if model_name is not None:
        try:
            spec = get_spec(model_name)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
    loaded = load_weights(weights if weights is not None else model_name)
    if weights is not None and spec is not None:
        named = {v for v in (loaded.variant, loaded.declared) if v}
        if spec.arch != loaded.model.arch or model_name not in named:
            holds = loaded.variant or loaded.declared or f"a custom {loaded.model.arch} config"
            raise UsageError(
                f"--model {model_name} does not match --weights {weights}, which holds {holds}"
            )
    used = loaded.entry.name if loaded.entry is not None else str(weights or loaded.path)
    return loaded.model, model_name or loaded.name, used


def make_restorer(
    model: RestorationModel,
    device: str,
    precision: str,
    tile: int | None,
    overlap: int | None,
    on_tile: Callable[[int, int], None] | None = None,
    threads: int | None = None,
    runtime: str = "auto",
) -> Restorer:
    from anyrestore.compute import reuse_freed_memory, set_threads
    from anyrestore.engine import Restorer

    set_threads(threads)
    reuse_freed_memory()
    return Restorer(
        model, device, precision, tile=tile, overlap=overlap, on_tile=on_tile, runtime=runtime
    )


def compute_record(restorer: Restorer) -> dict[str, object]:
    """The compute path for a --json record, with the runtime that ran the last image (under
    runtime "auto" a first whole image of a new size runs eager even on an OpenVINO path;
    None when nothing ran) and the precision that gave its output."""
    info = restorer.last_run
    path = restorer.last_path()
    record = path.as_dict()
    if info is not None and not info.tiles:  # --strength 0: the model did not run
        record["runtime"] = None
    if info is not None and info.recomputed_fp32:
        record["precision"] = "fp32"
        record["reason"] += f"; {path.precision} gave non-finite values, computed in fp32"
    return record


@contextmanager
def naming_weights(label: str) -> Iterator[None]:
    """Name the weights in the engine's refusal of NaN output (exit 4), which cannot."""
    try:
        yield
    except NonFiniteOutput as exc:
        raise WeightsError(f"{label}: {exc}") from None


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


def stdin_file_key() -> FileKey | None:
    """The file stdin reads from, by identity, where it is one (``< photo.jpg``, not a pipe)."""
    try:
        st = os.fstat(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):  # closed, or a stream without a descriptor
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def stdin_bytes(max_pixels: int | None = None) -> bytes:
    """All of stdin, refusing a closed stdin, a terminal and a folder with one clear line.

    At most what an image within the pixel limit can take (8 bytes a pixel, 16-bit RGBA
    uncompressed, plus room for metadata): ``fix - < /dev/zero`` or a video piped in by
    mistake would otherwise fill memory before the limit is checked."""

    if sys.stdin is None:
        raise UsageError("stdin is closed; pipe an image into `anyrestore fix -` or pass a path")
    if sys.stdin.isatty():
        raise UsageError(
            "refusing to read image bytes from a terminal; pipe a file in (fix - < photo.jpg) "
            "or pass its path"
        )
    limit = _stdin_limit(max_pixels)
    try:
        data = sys.stdin.buffer.read(limit + 1)
    except IsADirectoryError:
        raise UsageError("stdin is a folder, not an image") from None
    except OSError as exc:
        raise UsageError(f"cannot read stdin: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(
            f"<stdin>: more than {limit >> 20} MB, over what one image within the pixel limit "
            "takes (8 bytes a pixel); give the file by its path, or raise --max-pixels"
        )
    return data


def _stdin_limit(max_pixels: int | None) -> int:
    """The most stdin bytes one image within the pixel limit takes: 8 a pixel (16-bit RGBA
    uncompressed) plus room for metadata."""
    from anyrestore.engine.imageio import max_pixels_from_env

    return 8 * (max_pixels or max_pixels_from_env()) + (16 << 20)


def drain_stdin(max_pixels: int | None = None) -> None:
    """Read what is piped in and drop it: a writer whose pipe is left unread dies of SIGPIPE.
    Not a terminal (that would wait for Ctrl-D), and no more than ``stdin_bytes`` would read
    (an endless stdin would spin for ever)."""

    if sys.stdin is None or sys.stdin.isatty():
        return
    left = _stdin_limit(max_pixels)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        while left > 0 and (chunk := sys.stdin.buffer.read(min(left, 1 << 20))):
            left -= len(chunk)


def failed_record(source: str, exc: BaseException, name: str | None = None) -> None:
    """The ``failed`` record of the file a run ends on, where stdout still takes it; its error
    led by ``name`` (batch: the path within DIR), else by ``source``."""
    error = failure_line(name or source, exc)
    record = {"input": source, "status": "failed", "error": error}
    with contextlib.suppress(Exception):  # the error line that follows is what must get out
        emit(json.dumps(record))


def blames_the_file(exc: BaseException) -> bool:
    """Whether a run-stopping error came from restoring or writing one file (out of memory,
    non-finite output, a full disk), so that file gets its ``failed`` record like any other;
    a signal or a stdout that is gone stop the run without one."""
    return isinstance(exc, (DeviceError, WeightsError, OutputFull))


#: What stops a run of several files (fix IN..., batch) instead of failing one file: the
#: device or the weights would fail every file alike, so would a full or read-only output
#: file system (after restoring each), the user asked to stop, and a stdout that is gone or
#: full could report no later file (a departed reader ends the run quietly).
STOPS_THE_RUN = (
    DeviceError,
    WeightsError,
    OutputFull,
    KeyboardInterrupt,
    BrokenPipeError,
    StdoutError,
)


def failure_line(name: str, exc: BaseException) -> str:
    """The one line that reports a file failing in a run of several, led by its name once."""
    message = as_flags(str(exc)) or type(exc).__name__
    return message if message.startswith(name) else f"{name}: {message}"


def warn_lossless(formats: Iterable[str]) -> None:
    """Say that --quality does nothing for these formats, so that no one waits for it to."""
    if names := list(formats):
        say(f"anyrestore: warning: --quality has no effect on {', '.join(names)} (lossless)")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in lists and dicts) as None: JSON
    has no such numbers, and ``json.dumps`` would write the invalid ``NaN``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
