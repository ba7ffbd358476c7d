"""The ``anyrestore`` command: one Typer app; every command is registered here, once."""

from __future__ import annotations

import typer

from anyrestore.cli import batch, bench, fix, models, train, weights
from anyrestore.cli.errors import CliGroup

app = typer.Typer(
    name="anyrestore",
    cls=CliGroup,
    help="Restore photos damaged by noise, rain, haze, blur, low light and snow. "
    "Put -- before a file name that starts with a dash.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("fix")(fix.fix_command)
app.command("batch")(batch.batch_command)
app.command("bench")(bench.bench_command)
app.command("models")(models.models_command)
app.add_typer(weights.weights_app, name="weights")
app.add_typer(train.train_app, name="train")


def main() -> None:
    app()
