"""The ``anyrestore`` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="anyrestore",
    help="Restore photos damaged by noise, rain, haze, blur, low light and snow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each command module registers itself on `app` when imported (one line each).
from anyrestore.cli import batch as _batch  # noqa: E402,F401
from anyrestore.cli import bench as _bench  # noqa: E402,F401
from anyrestore.cli import fix as _fix  # noqa: E402,F401
from anyrestore.cli import models as _models  # noqa: E402,F401
from anyrestore.cli import train as _train  # noqa: E402,F401
from anyrestore.cli import weights as _weights  # noqa: E402,F401


def main() -> None:
    app()
