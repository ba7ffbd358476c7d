"""What a run shows and records: a Rich progress bar on stderr and a JSONL metrics log.

Only rank 0 reports. When stderr is not a terminal (a batch job), the bar is replaced by one
plain line per log interval, so job logs stay readable.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from anyrestore.errors import UsageError
from anyrestore.files import atomic_write


class MetricsLog:
    """Append-only JSONL file: one object per logged step or validation."""

    def __init__(self, path: Path, *, truncate_after: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and path.exists():
            # Resuming: rows written after the checkpoint belong to the abandoned future.
            keep = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a half-written last line from a killed run
                if row.get("step", 0) <= truncate_after:
                    keep.append(line)
            atomic_write(path, "".join(k + "\n" for k in keep).encode())
        self._file = path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(_finite(row)) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk: the run stops as for its checkpoint (exit 2)
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # a row a full disk would not take: its error was raised at write
            pass


class _StderrConsole(Console):
    """Rich's console, except that a closed stderr (``| tee log`` whose ``tee`` the terminal's
    Ctrl-C killed first, a dropped ssh session) silences it: Rich would exit 1 there, before
    the run saves its checkpoint. What a run shows must never stop it."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        try:  # later writes to the stream (say's lines, the interpreter's flush) go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.file.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):
            pass


class Reporter:
    """Progress bar (or plain lines) plus the metrics log; a no-op on ranks other than 0."""

    def __init__(
        self,
        out: Path,
        *,
        total: int,
        start: int,
        active: bool,
        progress: bool,
        console: Console | None = None,
    ) -> None:
        self.active = active
        self.console = console or _StderrConsole(stderr=True, markup=False)  # paths are text
        self.log = MetricsLog(out / "metrics.jsonl", truncate_after=start) if active else None
        self._bar: Progress | None = None
        self._task = None
        if active and progress and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, stats="")
            self._bar.start()
        self._plain = active and progress and self._bar is None
        self.total = total

    def step(self, step: int, row: dict[str, Any] | None) -> None:
        """Advance the bar to ``step``; with ``row``, also record and show its numbers."""
        if not self.active:
            return
        stats = None
        if row is not None:
            assert self.log is not None
            self.log.write(row)
            loss = f"{row['loss']:.4f}" if "loss" in row else "skipped"  # every step NaN
            stats = f"loss {loss}  lr {row['lr']:.2e}  {row['samples_per_s']:.1f} img/s"
            if self._plain:
                eta = row.get("eta_s")
                eta_text = f"  eta {_hms(eta)}" if eta is not None else ""
                self.console.print(f"step {step}/{self.total}  {stats}{eta_text}", highlight=False)
        if self._bar is not None:
            kwargs = {"stats": stats} if stats is not None else {}
            self._bar.update(self._task, completed=step, **kwargs)

    def record(self, row: dict[str, Any], message: str | None = None) -> None:
        """A row that is not a training step (validation, checkpoint) plus an optional line."""
        if not self.active:
            return
        assert self.log is not None
        self.log.write(row)
        if message:
            self.message(message)

    def message(self, text: str) -> None:
        if self.active:
            self.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self.log is not None:
            self.log.close()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities as null: JSON has no spelling for them (a validation PSNR of two
    identical images is infinite; NaN outputs give NaN)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
