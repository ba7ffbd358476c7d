"""``anyrestore models``: variants with their size, cost and weights."""

from __future__ import annotations

import json

from typer.testing import CliRunner

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
    assert row["params"] == count_params(create_model("anyir_t"))
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
