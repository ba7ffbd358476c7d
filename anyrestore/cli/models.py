"""``anyrestore models``: the registered variants with their size and cost."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from anyrestore.cli.common import table_console
from anyrestore.cli.errors import emit


def models_command(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
    size: Annotated[int, typer.Option(help="Square input side for the MAC count.")] = 224,
    only: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only these variants (repeatable).")
    ] = None,
) -> None:
    """List model variants: parameters, MACs (the papers' "FLOPs") and available weights."""
    from anyrestore.bench.complexity import describe_models

    rows = describe_models(size=size, names=only)
    if json_output:
        emit(json.dumps(rows, indent=2))
        return
    table = Table(title=f"anyrestore models (MACs at {size}x{size}, the papers' FLOPs convention)")
    for col in ("name", "arch", "params", f"GMACs@{size}", "paper params / GMACs"):
        table.add_column(col, justify="left" if col in ("name", "arch") else "right")
    table.add_column("weights", no_wrap=True)  # names a user types after --weights: never cut
    for r in rows:
        paper = r.get("paper") or {}
        ref = f"{paper['params'] / 1e6:.2f}M / {paper['flops_224'] / 1e9:.2f}G" if paper else "-"
        weights = "\n".join(r["weights"]) if r["weights"] else "none"
        table.add_row(
            r["name"],
            r["arch"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['flops'] / 1e9:.2f}",
            ref,
            weights,
        )
    table_console().print(table)
