"""The ``anyrestore`` command: one Typer app; every command is registered here, once."""

from __future__ import annotations

import platform
import re
from importlib import metadata, util
from pathlib import Path
from typing import Annotated

import typer

from anyrestore import __version__
from anyrestore.cli import batch, bench, fix, models, train, weights
from anyrestore.cli.common import setup_logging
from anyrestore.cli.errors import CliGroup

app = typer.Typer(
    name="anyrestore",
    cls=CliGroup,
    help="Restore photos damaged by noise, rain, haze, blur, low light and snow. "
    "Put -- before a file name that starts with a dash.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command inherits it
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version_line() -> str:
    """What a bug report needs: this package's, torch's and Python's versions, and the OS.

    Read from the installed files, so it prints without importing torch."""
    torch_version = _torch_version()
    system = f"{platform.system()} {platform.machine()}".strip()
    return (
        f"anyrestore {__version__} (torch {torch_version}, "
        f"Python {platform.python_version()}, {system})"
    )


def _torch_version() -> str:
    """torch's own version string, build tag included (``+cpu``, ``+cu130``): the line
    ``torch/version.py`` sets, which is what ``torch.__version__`` reads. The wheel's metadata
    lacks the tag for PyPI's CUDA builds, and whether torch is a CPU or a CUDA build is often
    what a bug report needs most."""
    try:
        spec = util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        try:
            text = (Path(spec.origin).parent / "version.py").read_text()
        except OSError:
            text = ""
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found:
            return found.group(1)
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the versions of anyrestore, torch and Python, and exit.",
        ),
    ] = False,
) -> None:
    """Options of the group itself; its help text is the app's."""
    # Every command's library warnings read "anyrestore: warning: ..." (fix and batch set
    # the level again for --quiet).
    setup_logging(quiet=False)


app.command("fix")(fix.fix_command)
app.command("batch")(batch.batch_command)
app.command("bench")(bench.bench_command)
app.command("models")(models.models_command)
app.add_typer(weights.weights_app, name="weights")
app.add_typer(train.train_app, name="train")


def main() -> None:
    app()
