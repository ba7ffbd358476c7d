"""``anyrestore models``: variants with their size, cost and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO

from typer.testing import CliRunner

from anyrestore.bench import complexity
from anyrestore.bench.complexity import PAPER_FIGURES, count_params
from anyrestore.cli.app import app
from anyrestore.models import create_model

runner = CliRunner()


def test_models_json_reports_params_and_macs_for_a_variant() -> None:
    result = runner.invoke(app, ["models", "--json", "--model", "anyir_t"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["name"] == "anyir_t"
    assert isinstance(row["params"], int)
    assert row["params"] == count_params(create_model("anyir_t")) == 5_736_376  # Tab. 11
    # The same convention as the papers (MACs): within 15% of AnyIR-T's 26G.
    assert abs(row["flops_224"] / PAPER_FIGURES["anyir_t"]["flops_224"] - 1) < 0.15
    assert "anyir_t-synthetic" in row["weights"]  # the shipped default is listed


def test_models_table_and_unknown_name(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal, or a pipe
    result = runner.invoke(app, ["models", "--model", "clusir_t"])
    assert result.exit_code == 0, result.output
    assert "clusir_t" in result.stdout and "GMACs" in result.stdout
    (row,) = json.loads(runner.invoke(app, ["models", "--json", "--model", "clusir_t"]).stdout)
    assert row["weights"] and all(name in result.stdout for name in row["weights"])  # whole
    bad = runner.invoke(app, ["models", "--model", "nope"])
    assert bad.exit_code == 2
    assert "unknown model 'nope'" in bad.output


def test_models_table_keeps_every_figure_whole_in_a_narrow_terminal(
    monkeypatch, model_rows: list[dict]
) -> None:
    # Every variant's MACs counted once (the slow part); the table rendered at each width.
    monkeypatch.setattr(complexity, "describe_models", lambda size, names: model_rows)
    for columns in ("80", "100"):  # 80: what Rich assumes for a pipe
        monkeypatch.setenv("COLUMNS", columns)
        result = runner.invoke(app, ["models"])
        assert result.exit_code == 0, result.output
        assert "…" not in result.stdout
        lines = result.stdout.splitlines()
        for row in model_rows:
            # A variant's name, its measured figures and the paper's pair share one line.
            (line,) = [ln for ln in lines if f" {row['name']} " in ln]
            assert f"{row['params'] / 1e6:.2f}M" in line
            assert f"{row['flops'] / 1e9:.2f}" in line
            paper = row.get("paper")
            if paper:
                assert f"{paper['params'] / 1e6:.2f}M / {paper['flops_224'] / 1e9:.2f}G" in line


def test_a_size_too_small_for_a_pass_is_a_usage_error() -> None:
    result = runner.invoke(app, ["models", "--size", "0", "--model", "anyir_t"])
    assert result.exit_code == 2
    assert "--size" in result.stderr and "internal error" not in result.output


def _weights_list(stdout: int | IO[bytes]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    args = [sys.executable, "-m", "anyrestore", "weights", "list"]
    return subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120)


def test_a_table_to_a_reader_that_left_or_a_full_disk_is_handled_like_any_result() -> None:
    # `anyrestore weights list | head -0`: quiet, exit 0, as every other result line.
    read, write = os.pipe()
    os.close(read)
    try:
        gone = _weights_list(write)
    finally:
        os.close(write)
    assert gone.returncode == 0 and gone.stderr == b""
    with open("/dev/full", "wb") as full:  # exit 2, one line, nothing else
        failed = _weights_list(full)
    assert failed.returncode == 2
    assert failed.stderr.decode().splitlines() == [
        "anyrestore: error: cannot write to stdout: No space left on device"
    ]


def test_a_wide_table_in_a_pipe_keeps_every_figure_whole(monkeypatch, capsys) -> None:
    # Rich lays out a pipe at 80 columns: bench's table of two models and two baselines was
    # cut ("0.77…") in `> results.txt`.
    from rich.table import Table

    from anyrestore.cli.common import print_table

    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table(*[f"model {i}" for i in range(12)])
    table.add_row(*[f"{20 + i}.123 / 0.{i}45" for i in range(12)])
    print_table(table)
    out = capsys.readouterr().out
    assert "…" not in out and "31.123 / 0.1145" in out
