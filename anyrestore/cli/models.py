"""``anyrestore models``: the registered variants with their size and cost."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from anyrestore.cli.common import print_table
from anyrestore.cli.errors import emit


def models_command(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
    size: Annotated[
        int,
        typer.Option(min=1, max=4096, metavar="PX", help="Square input side for the MAC count."),
    ] = 224,
    only: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", metavar="NAME", help="Only these variants (repeatable)."),
    ] = None,
) -> None:
    """List model variants: parameters, MACs (the papers' "FLOPs") and available weights."""
    from anyrestore.bench.complexity import describe_models

    rows = describe_models(size=size, names=only)
    if json_output:
        emit(json.dumps(rows, indent=2))
        return
    table = Table(title=f"anyrestore models (MACs at {size}x{size}, the papers' FLOPs convention)")
    # Names are typed after --model and figures misread when cut, so nothing wraps; the
    # architecture is the name's prefix (and in --json), which leaves room in 80 columns.
    table.add_column("name", no_wrap=True)
    for col in ("params", "GMACs"):  # the title says at which size
        table.add_column(col, justify="right", no_wrap=True)
    # The papers' own figures, always at 224: kept on one line so that a pair is read as one.
    table.add_column("paper\nat 224", justify="right", no_wrap=True)
    table.add_column("weights", no_wrap=True)  # names a user types after --weights: never cut
    for r in rows:
        paper = r.get("paper") or {}
        ref = f"{paper['params'] / 1e6:.2f}M / {paper['flops_224'] / 1e9:.2f}G" if paper else "-"
        weights = "\n".join(r["weights"]) if r["weights"] else "none"
        table.add_row(
            r["name"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['flops'] / 1e9:.2f}",
            ref,
            weights,
        )
    print_table(table)
