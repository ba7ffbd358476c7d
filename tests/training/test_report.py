"""What a training run shows: its progress must never be what stops it."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from anyrestore.training.report import Reporter


class _ClosedPipe(io.StringIO):
    """A stderr whose reader has gone (``| tee log`` after the terminal's Ctrl-C)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stderr_silences_the_run_instead_of_ending_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", _ClosedPipe())
    reporter = Reporter(tmp_path, total=10, start=0, active=True, progress=True)
    row = {"step": 1, "loss": 0.5, "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 9.0}
    reporter.step(1, row)  # a plain progress line: the first write that fails
    reporter.message("stopped at step 1; resume with --resume last.pt")
    reporter.step(2, {**row, "step": 2})
    reporter.close()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2]  # the metrics log goes on
