"""``anyrestore batch``: restore a folder (optionally its tree), one model load, bad files skipped.

Under ``torchrun`` (RANK / WORLD_SIZE set) every rank takes files ``rank::world_size`` of the
sorted list, and on CUDA its LOCAL_RANK GPU, so a folder spreads over GPUs or machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from anyrestore.cli.common import (
    STOPS_THE_RUN,
    blames_the_file,
    compute_record,
    err_console,
    failed_record,
    failure_line,
    load_model,
    make_restorer,
    naming_weights,
    setup_logging,
    warn_lossless,
    weights_label,
)
from anyrestore.cli.errors import StdoutError, emit, fail, say, stdout
from anyrestore.cli.options import (
    AllowTruncatedOpt,
    DeviceOpt,
    FormatOpt,
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
    deprecated_alias,
)
from anyrestore.errors import ExitCode, UsageError
from anyrestore.files import FileKey, file_key

if TYPE_CHECKING:
    from anyrestore.engine import Restorer


_STATUSES = ("ok", "skipped", "failed")


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def _folders(input_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    """DIR and OUTDIR with links resolved, checked before anything else is done."""
    try:
        if not input_dir.is_dir():
            raise UsageError(
                f"input folder not found: {input_dir}"
                if not input_dir.exists()
                else f"{input_dir} is not a folder"
            )
        if output_dir.exists() and not output_dir.is_dir():
            raise UsageError(f"{output_dir} exists and is not a folder")
        # realpath: Python 3.11's Path.resolve raises RuntimeError on a loop of links
        root, out_root = Path(os.path.realpath(input_dir)), Path(os.path.realpath(output_dir))
    except OSError as exc:  # a name too long for the system
        raise UsageError(f"{exc.filename or input_dir}: {exc.strerror or exc}") from None
    out_root = _spelled_from(root, out_root)
    if root == out_root:
        raise UsageError("OUTDIR must differ from DIR: batch never writes over its inputs")
    return root, out_root


def _spelled_from(root: Path, out_root: Path) -> Path:
    """``out_root``, spelled from ``root`` where it is ``root`` or lies inside it under
    another spelling (``-o ~/pictures/trip`` for ``~/Pictures/Trip`` on a case-insensitive
    disk): the checks that OUTDIR is not DIR, and that it is not read back, compare paths."""
    tail: list[str] = []
    for folder in (out_root, *out_root.parents):
        if file_key(folder) == file_key(root) and os.path.isdir(folder):
            return root.joinpath(*reversed(tail))
        tail.append(folder.name)
    return out_root


def _shard() -> tuple[int, int]:
    """This process's (rank, world size) from torchrun's environment; (0, 1) without it."""
    if "RANK" not in os.environ and os.environ.get("WORLD_SIZE", "1").strip() != "1":
        # rank 0 would restore its share and the rest of the folder never, with exit 0
        raise UsageError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but RANK is not: set both (torchrun "
            "does) or neither"
        )
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"invalid RANK={rank} for WORLD_SIZE={world}")
    return rank, world


def _own_extension(rel: Path) -> str:
    """An output's extension without --format: the input's where anyrestore writes that
    format, else .png."""
    from anyrestore.engine.imageio import EXTENSIONS

    return rel.suffix if rel.suffix.lower() in EXTENSIONS else ".png"


def _why_png(rel: Path) -> str:
    """Why an input's output is PNG although it has an extension of its own, or ''."""
    from anyrestore.files import IMAGE_EXTENSIONS

    if not rel.suffix or _own_extension(rel) == rel.suffix:
        return ""
    if IMAGE_EXTENSIONS.get(rel.suffix.lower()) == "AVIF":
        return f" ({rel.name} becomes PNG: this Pillow cannot write AVIF)"
    return f" ({rel.name} becomes PNG: anyrestore does not write {rel.suffix[1:].upper()})"


def plan_jobs(
    root: Path, out_dir: Path, files: list[Path], recursive: bool, suffix: str, ext: str | None
) -> list[Job]:
    """Map every input to its output; two inputs landing on one output is a usage error.

    Without ``ext`` (--format) each output keeps its input's extension, or becomes PNG where
    anyrestore reads the format but does not write it (PPM) or the extension names none.
    """
    jobs, seen = [], {}
    for path in files:
        rel = path.relative_to(root)
        parent = out_dir / rel.parent if recursive else out_dir
        out_ext = ext if ext is not None else _own_extension(rel)
        target = parent / f"{rel.stem}{suffix}{out_ext}"
        if target in seen:
            # Only a --format that made two extensions alike can be undone by an option.
            own = {_own_extension(p) for p in (seen[target], rel)}
            fix = " or keep each input's format (no --format)" if ext and len(own) == 2 else ""
            why = "" if ext else "".join(_why_png(p) for p in (seen[target], rel))
            raise UsageError(
                f"{seen[target]} and {rel} would both be written to {target}{why}; rename one{fix}"
            )
        seen[target] = rel
        jobs.append(Job(path, target))
    return jobs


def batch_command(
    input_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of images to restore.")],
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="OUTDIR", help="Where restored images go (not DIR itself)."
        ),
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Include subfolders; OUTDIR mirrors the tree.")
    ] = False,
    glob: Annotated[
        str | None,
        typer.Option(
            "--glob",
            metavar="PATTERN",
            help="Only files matching this pattern, e.g. '*.jpg'. Default: all images.",
        ),
    ] = None,
    skip_existing: SkipExistingOpt = False,
    suffix: Annotated[
        str,
        typer.Option(
            "--suffix", metavar="TEXT", help="Appended to each output's stem, e.g. _restored."
        ),
    ] = "",
    fmt: FormatOpt = None,
    quality: QualityOpt = None,
    ext: Annotated[
        str | None, typer.Option("--ext", hidden=True, help="Old name of --format.")
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
    max_pixels: MaxPixelsOpt = None,
    allow_truncated: AllowTruncatedOpt = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per file on stdout.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore every image in a folder; failures are reported, the rest still run (exit 1 if any failed)."""
    from anyrestore.engine.imageio import (
        EXTENSIONS,
        FORMAT_EXTENSION,
        LOSSY_FORMATS,
        parse_format,
    )
    from anyrestore.files import AtomicFile, list_images, missing_folders, remove_empty

    setup_logging(quiet)
    root, out_root = _folders(input_dir, output_dir)
    if max_pixels is not None and max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
    fmt = deprecated_alias("--ext", "--format", ext, fmt)  # type: ignore[assignment]
    out_ext = None
    if fmt is not None:  # the extension `fix` gives that format: -f jpeg writes .jpg
        out_ext = FORMAT_EXTENSION[parse_format(fmt)]
    if "/" in suffix or os.sep in suffix:
        raise UsageError("--suffix cannot contain a path separator")
    rank, world = _shard()
    if json_output:
        stdout()  # each file's record goes there: a closed stdout stops the run before any work

    # OUTDIR, however the walk reaches it (a link in DIR too): outputs are never read back.
    # Not when DIR lies inside OUTDIR: every input would be under it.
    exclude = None if root.is_relative_to(out_root) else out_root
    unreadable: list[OSError] = []
    passed_over: list[Path] = []
    try:
        files = list_images(
            root,
            recursive=recursive,
            pattern=glob,
            exclude=exclude,
            unreadable=unreadable,
            passed_over=passed_over,
        )
    except OSError as exc:
        raise UsageError(f"cannot read {input_dir}: {exc.strerror or exc}") from None
    if passed_over and rank == 0 and not quiet:
        say(f"anyrestore: warning: {_passed_over(passed_over)}")
    if passed_over and rank == 0 and json_output:  # a record per file in the folder
        from anyrestore.files import unreadable_format

        for path in passed_over:
            reason = f"{unreadable_format(path)}: a format anyrestore cannot read"
            record = {"input": str(input_dir / path.relative_to(root)), "status": "skipped"}
            emit(json.dumps({**record, "reason": reason}))
    jobs = plan_jobs(root, out_root, files, recursive, suffix, out_ext)[rank::world]
    where = f" (rank {rank} of {world})" if world > 1 else ""
    # Folders that could not be listed fail like files (reported by the first rank alone):
    # their images would otherwise be missing from the output without a word.
    unread = [_folder_failure(input_dir, root, exc) for exc in unreadable] if rank == 0 else []
    for folder, message in unread:
        say(f"failed {message}")
        if json_output:
            emit(json.dumps({"input": folder, "status": "failed", "error": message}))
    if not jobs:
        if not quiet:
            say(f"no images to restore in {input_dir}{where}")
        if unread:
            fail(_failures(0, 0, len(unread), where), ExitCode.FAILED)
        return
    if quality is not None and not quiet:
        written = {EXTENSIONS.get(j.target.suffix.lower(), "") for j in jobs}
        warn_lossless(sorted(written - LOSSY_FORMATS - {""}))
    # An output that is a link to an input would be written through: such a file fails alone
    inputs = {file_key(f) for f in files}
    made = missing_folders(out_root)
    try:  # an unwritable OUTDIR fails before any work (a name no file or folder there has)
        AtomicFile(out_root / f".anyrestore-probe-{secrets.token_hex(8)}").discard()
    except UsageError as exc:
        raise UsageError(
            f"cannot write to OUTDIR {output_dir}: {str(exc).rsplit(': ', 1)[-1]}"
        ) from None

    try:
        net, model_name, weights_name = load_model(model, weights)
        restorer = make_restorer(
            net, device, precision, tile, tile_overlap, threads=threads, runtime=runtime
        )
    except BaseException:  # a bad option or weights: leave no empty OUTDIR behind
        remove_empty(made)
        raise
    if not quiet:
        say(
            f"{len(jobs)} images{where}; model {model_name} ({weights_name})"
            f" on {restorer.describe()}"
        )

    batch = _Batch(
        restorer=restorer,
        inputs=inputs,
        label=weights_label(weights, model),
        strength=strength,
        quality=quality,
        max_pixels=max_pixels,
        allow_truncated=allow_truncated,
        skip_existing=skip_existing,
        json_output=json_output,
    )
    counts = batch.counts
    started = time.perf_counter()
    with (
        _progress(quiet) as progress,
        _summary_if_stopped(counts, len(jobs), started, where, quiet),
    ):
        task = progress.add_task("restoring", total=len(jobs))
        for job in jobs:
            rel = job.source.relative_to(root).as_posix()
            record = {  # paths as the user gave the folders, as `fix` reports them
                "input": str(input_dir / rel),
                "output": str(output_dir / job.target.relative_to(out_root)),
                "model": model_name,
                "weights": weights_name,
                "device": str(restorer.device),
                "precision": restorer.precision,
                "strength": strength,
                "compute": restorer.path.as_dict(),
            }
            t0 = time.perf_counter()
            batch.restore(job, rel, record)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            if json_output:
                emit(json.dumps(record))
            progress.advance(task)
    elapsed = time.perf_counter() - started
    if not quiet or counts["failed"] or unread:
        folders = f", {len(unread)} unreadable folder{_s(len(unread))}" if unread else ""
        say(
            f"{counts['ok']} restored, {counts['skipped']} skipped, {counts['failed']} failed"
            f"{folders}{where} in {elapsed:.1f} s"
        )
    if counts["failed"] or unread:
        fail(_failures(counts["failed"], len(jobs), len(unread), where), ExitCode.FAILED)


def _progress(quiet: bool) -> Progress:
    """The bar on stderr (none when quiet or not a terminal).

    Rich would route stdout through the bar's console (stderr) while the bar runs: fine when
    both are the same screen, but ``--json > records.jsonl`` (or ``| jq``) from a terminal,
    or with ``FORCE_COLOR`` set, would then get no records. Stdout is left alone unless it
    is a terminal too."""
    err = err_console()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=False,
        redirect_stdout=_is_tty(sys.stdout),
    )


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream is not None and stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


@dataclass
class _Batch:
    """What every file of a run is restored with, and the run's counts so far."""

    restorer: Restorer
    inputs: set[FileKey]  # the inputs, by identity: no output may be written through one
    label: str
    strength: float
    quality: int | None
    max_pixels: int | None
    allow_truncated: bool
    skip_existing: bool
    json_output: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_STATUSES, 0))
    #: The outputs written so far, by identity: two names of one file (IMG_1.jpg and
    #: img_1.jpg on a case-insensitive disk, a link in OUTDIR) must not take two outputs.
    written: set[FileKey] = field(default_factory=set)

    def restore(self, job: Job, rel: str, record: dict[str, object]) -> None:
        """Restore one file and complete its ``record``; a failure of the file alone is
        reported and counted, one that stops the run (STOPS_THE_RUN) is raised."""
        from anyrestore.engine.imageio import (
            check_encodable,
            encode_image,
            format_for_path,
            read_image,
        )
        from anyrestore.files import AtomicFile

        counts = self.counts
        target = None
        try:
            if file_key(job.target) in self.written:
                raise UsageError(f"{rel}: its output {job.target} is another output of this run")
            # lexists: never raises (a name too long fails below, alone), and an output
            # that is a link to nothing is an output, as in fix
            if self.skip_existing and os.path.lexists(job.target):
                record["status"] = "skipped"
                record["reason"] = "its output exists (--skip-existing)"
                counts["skipped"] += 1
                return
            if file_key(job.target) in self.inputs:
                how = "links to" if os.path.islink(job.target) else "is"
                raise UsageError(
                    f"{rel}: its output {job.target} {how} an input; "
                    "batch never writes over its inputs"
                )
            image = read_image(
                job.source,
                max_pixels=self.max_pixels,
                name=rel,
                allow_truncated=self.allow_truncated,
            )
            out_format = format_for_path(job.target)
            check_encodable(image.width, image.height, out_format)
            target = AtomicFile(job.target)  # an unwritable place fails before the work
            with naming_weights(self.label):
                restored = self.restorer.restore_image(image, self.strength)
            target.write(encode_image(restored, out_format, quality=self.quality))
            # In place before it is announced: a reader acting on the record finds the file
            # (a place that changed meanwhile fails it here).
            target.commit()
            self.written.add(file_key(target.path))
            counts["ok"] += 1  # counted as it lands: a stop's summary says so
            info = self.restorer.last_run
            compute = compute_record(self.restorer)
            record.update(
                status="ok",
                precision=compute["precision"],  # what gave this output (eager fp32 too)
                compute=compute,
                width=image.width,
                height=image.height,
                tiles=info.tiles if info else 1,
                tile=info.tile if info else 0,
            )
        except STOPS_THE_RUN as exc:
            counts["failed"] += blames_the_file(exc)  # its record says failed too
            if self.json_output and blames_the_file(exc):  # it gets its record too
                failed_record(str(record["input"]), exc, rel)
            raise  # the whole run stops; the finally below cleans up
        except Exception as exc:  # one bad file must not stop the folder
            counts["failed"] += 1
            message = failure_line(rel, exc)
            del record["output"]  # nothing was written there
            record.update(status="failed", error=message)
            say(f"failed {message}")
        finally:  # stopped or a failed file: nothing half-made stays
            if target is not None:
                target.discard()  # nothing once committed


@contextlib.contextmanager
def _summary_if_stopped(
    counts: dict[str, int], jobs: int, started: float, where: str, quiet: bool
) -> Iterator[None]:
    """A run stopped midway (a signal, a full disk, out of memory) still says what it did
    before the error line: which outputs are done, and how many files it never reached."""
    try:
        yield
    except STOPS_THE_RUN as exc:
        # Not for a reader that went away (a quiet end) or a stdout that takes nothing.
        if not quiet and not isinstance(exc, (BrokenPipeError, StdoutError)):
            left = jobs - sum(counts.values())
            say(
                f"stopped: {counts['ok']} restored, {counts['skipped']} skipped, "
                f"{counts['failed']} failed, {left} not restored{where} in "
                f"{time.perf_counter() - started:.1f} s"
            )
        raise


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _passed_over(paths: list[Path]) -> str:
    """Name the photos a folder holds in formats anyrestore cannot read (HEIC, camera RAW)."""
    from anyrestore.files import unreadable_summary

    return (
        f"passed over {unreadable_summary(paths)}; convert them to TIFF, PNG or JPEG to "
        "restore them"
    )


def _failures(failed: int, files: int, folders: int, where: str) -> str:
    """The closing error line of a batch that did not restore everything."""
    parts = [f"{failed} of {files} files failed"] if failed else []
    if folders:
        parts.append(f"{folders} folder{_s(folders)} could not be read")
    return " and ".join(parts) + where


def _folder_failure(input_dir: Path, root: Path, exc: OSError) -> tuple[str, str]:
    """A folder below DIR that could not be listed, as the user named DIR (as the files'
    lines are), and its failure line."""
    folder = Path(exc.filename) if exc.filename else root
    try:
        shown = (input_dir / folder.relative_to(root)).as_posix()
    except ValueError:  # reached through a link from outside DIR
        shown = folder.as_posix()
    return shown, f"{shown}/: cannot read this folder: {exc.strerror or exc}"
