"""The README's commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _bash_blocks()
    assert len(blocks) >= 2, "README must open with a run command and a test command"
    test_command = blocks[1]
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci, ".ci/run must run exactly the README's test command"


def test_readme_run_command_uses_shipped_sample() -> None:
    run_command = _bash_blocks()[0]
    assert "anyrestore fix" in run_command
    sample = re.search(r"anyrestore fix (\S+)", run_command).group(1)
    assert (ROOT / sample).is_file(), f"README sample {sample} is not in the repo"


def test_readme_model_table_matches_what_the_tool_counts(model_rows: list[dict]) -> None:
    """The params and GMACs the README quotes are the ones `anyrestore models` prints."""
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\d.,]+)M? \(.*?\) \| ([\d.]+) \(", text, flags=re.M)
    quoted = {name: (params, gmacs) for name, params, gmacs in rows}
    assert set(quoted) == {"anyir_t", "anyir_s", "clusir_t", "clusir_s", "clusir_b"}
    counted = {row["name"]: row for row in model_rows}
    for name, (params, gmacs) in quoted.items():
        model = counted[name]  # every quoted variant is one the tool counts
        if "," in params:
            assert int(params.replace(",", "")) == model["params"], model["name"]
        else:  # quoted in millions
            assert params == f"{model['params'] / 1e6:.2f}", model["name"]
        assert gmacs == f"{model['flops_224'] / 1e9:.2f}", model["name"]


def test_readme_model_table_says_which_variants_have_weights() -> None:
    """A user picking a variant from the table learns whether trained weights ship for it."""
    from anyrestore.weights.manifest import list_entries

    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|.*\| (yes|none)\b[^|]*\|$", text, flags=re.M)
    shipped = {entry.model for entry in list_entries(ROOT / "weights_manifest.toml")}
    assert {name for name, said in rows if said == "yes"} == shipped
    assert {name for name, said in rows if said == "none"} == (
        {"anyir_t", "anyir_s", "clusir_t", "clusir_s", "clusir_b"} - shipped
    )
