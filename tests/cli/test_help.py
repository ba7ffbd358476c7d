"""Every command's --help shows its text as written (Rich reads `[x]` as a style tag) and
names values the way a user reads them (``--model NAME``), not as Python types."""

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
    texts += [
        (param.name, getattr(param, "help", None) or "")
        for param in command.params
        if not getattr(param, "hidden", False)  # old spellings kept working, not shown
    ]
    for name, text in texts:
        written = text.replace("\\[", "[")
        # The words around every bracket pair, e.g. "anyrestore[bench]", as the user must type them.
        for phrase in re.findall(r"\S*\[[^\]\s]*\]\S*", written):
            assert phrase in shown, f"{' '.join(path)} {name}: {phrase!r} not shown"
        # and the whole text, in one piece (a command's own help: its first paragraph)
        whole = " ".join(written.split("\n\n")[0].split() if name == "help" else written.split())
        assert whole in shown, f"{' '.join(path)} {name}: {whole!r} not shown whole"


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


def test_version_names_torchs_build_without_importing_it(tmp_path):
    """PyPI's CUDA wheels record "2.13.0" in their metadata and "2.13.0+cu130" in
    torch.__version__: the line must name the build, and --version must stay quick."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('--version imported torch')\n")
    (fake / "version.py").write_text("__version__ = '9.8.7+cu999'\ncuda = '99.9'\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "anyrestore", "--version"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stderr == ""
    assert "(torch 9.8.7+cu999, Python " in done.stdout


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
        ["fix", "a.png", "--threads", "0"],
        ["models", "--size", "0"],
    ],
)
def test_ranges_are_still_enforced(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[-2]}'" in result.stderr, result.stderr
    assert "than or equal to" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_dash_h_is_help_everywhere(path, command):
    short = runner.invoke(app, [*path, "-h"], terminal_width=100)
    assert short.exit_code == 0, short.output
    assert short.output == runner.invoke(app, [*path, "--help"], terminal_width=100).output


def test_a_torch_that_fails_to_import_is_one_line_not_a_traceback(tmp_path):
    """A torch wheel missing a shared library raises OSError on import: the user gets one
    line naming it and what to do (exit 1), not Typer's traceback."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise OSError('libcudnn.so.9: cannot open shared object file')\n"
    )
    (tmp_path / "a.png").write_bytes(b"not read")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "anyrestore", "fix", str(tmp_path / "a.png")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("anyrestore: error: cannot import torch (OSError: libcudnn.so.9")
    assert "reinstall" in last


@pytest.mark.parametrize("group", [[], ["weights"]])
def test_a_group_without_a_command_points_at_its_own_help(group: list[str]) -> None:
    done = runner.invoke(app, group)
    named = " ".join(["anyrestore", *group])
    assert done.exit_code == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"anyrestore: error: a command is required; `{named} --help` lists them"
    )
