"""Every --help names values the way a user reads them (``--model NAME``), not as Python types."""

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
# Typer 0.29's placeholders: <str>, <int>, <int range>, <float range>, <path>, <list[str]>, ...
PLACEHOLDER = re.compile(r"<(str|int|float|bool|path|file|dir|list\[|Path|tuple)")


def help_screen(*path: str) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def usage_line(screen: str) -> str:
    return next(line.strip() for line in screen.splitlines() if "Usage:" in line)


def option_line(screen: str, flag: str) -> str:
    return next(line for line in screen.splitlines() if re.search(rf"│ +(\* +)?{flag} ", line))


@pytest.mark.parametrize(
    "path", [p for p, _ in COMMANDS], ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_help_shows_no_python_type_placeholders(path):
    screen = help_screen(*path)
    assert not PLACEHOLDER.search(screen), PLACEHOLDER.findall(screen)
    assert "{" not in usage_line(screen)


@pytest.mark.parametrize(
    ("path", "usage"),
    [
        (("fix",), "Usage: anyrestore fix [OPTIONS] IN..."),
        (("batch",), "Usage: anyrestore batch [OPTIONS] DIR"),
        (("train", "export"), "Usage: anyrestore train export [OPTIONS] CHECKPOINT"),
        (("train", "average"), "Usage: anyrestore train average [OPTIONS] CHECKPOINT..."),
        (("weights", "download"), "Usage: anyrestore weights download [OPTIONS] NAME..."),
        (("weights", "verify"), "Usage: anyrestore weights verify [OPTIONS] [NAME]..."),
        (("weights", "add"), "Usage: anyrestore weights add [OPTIONS] FILE"),
    ],
)
def test_usage_line_reads_like_a_unix_tool(path, usage):
    assert usage_line(help_screen(*path)) == usage


@pytest.mark.parametrize(
    ("path", "flag", "metavar"),
    [
        (("fix",), "--model", "NAME"),
        (("fix",), "--weights", "FILE|NAME"),
        (("fix",), "--precision", "auto|fp32|fp16|bf16"),
        (("fix",), "--threads", "N"),
        (("fix",), "--quality", "1-100"),
        (("fix",), "--strength", "0-1"),
        (("batch",), "--glob", "PATTERN"),
        (("train",), "--set", "KEY=VALUE"),
        (("train", "export"), "--dtype", "fp16|bf16|fp32"),
    ],
)
def test_options_name_their_value(path, flag, metavar):
    line = option_line(help_screen(*path), flag)
    # right after the flag (and its short form), in the column Typer fills with the type
    assert re.search(rf"{flag}(,-\w| +-\w)? +{re.escape(metavar)}( |$)", line), line


def test_a_range_is_said_once_where_the_metavar_is_the_range():
    screen = help_screen("fix")
    assert "<=x<=" not in option_line(screen, "--quality")
    assert "<=x<=" not in option_line(screen, "--strength")
    assert "1<=x<=4096" in option_line(help_screen("models"), "--size")  # PX says no range


@pytest.mark.parametrize(
    "args",
    [
        ["fix", "a.png", "--quality", "0"],
        ["fix", "a.png", "--quality", "101"],
        ["fix", "a.png", "--strength", "1.5"],
        ["fix", "a.png", "--threads", "0"],
        ["models", "--size", "0"],
    ],
)
def test_ranges_are_still_enforced(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[-2]}'" in result.stderr, result.stderr
    assert "than or equal to" in result.stderr, result.stderr
