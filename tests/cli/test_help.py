"""Every command's --help shows its text as written (Rich reads `[x]` as a style tag)."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from anyrestore.cli.app import app

runner = CliRunner()


def _commands(group, path: tuple[str, ...] = ()):
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_help_shows_every_option_help_whole(path, command):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000"}, terminal_width=1000)
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    texts = [("help", command.help or "")]
    texts += [(param.name, getattr(param, "help", None) or "") for param in command.params]
    for name, text in texts:
        # The words around every bracket pair, e.g. "anyrestore[bench]", as the user must type them.
        for phrase in re.findall(r"\S*\[[^\]\s]*\]\S*", text.replace("\\[", "[")):
            assert phrase in shown, f"{' '.join(path)} {name}: {phrase!r} not shown"


@pytest.mark.parametrize(
    ("path", "flags", "valued"),
    [
        ((), ("--version", "--help"), ()),
        (
            ("fix",),
            ("--overwrite", "--json", "--quiet", "--help"),
            (("--model", "NAME"), ("--tile", "PX")),
        ),
    ],
)
def test_flags_show_no_value_type(path, flags, valued):
    # "--json <bool>" would read as if a value were wanted; "--json true" is an error.
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│ --" in line}
    assert "<bool>" not in result.output
    for flag in flags:
        assert "<" not in lines[flag], lines[flag]
    for option, metavar in valued:  # options that take a value name it
        assert f" {metavar} " in lines[option], lines[option]


def test_version_names_the_package_torch_and_python_for_a_bug_report():
    import platform
    import subprocess
    import sys

    import torch

    import anyrestore

    done = subprocess.run(
        [sys.executable, "-m", "anyrestore", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(
        f"anyrestore {anyrestore.__version__} (torch {torch.__version__}, "
        f"Python {platform.python_version()}, "
    )
    assert done.stdout.count("\n") == 1
