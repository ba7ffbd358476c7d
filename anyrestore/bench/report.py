"""Bench results as a Rich table for people, JSON or CSV for scripts."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from anyrestore.bench.candidates import IDENTITY

_FIRST = (
    "model",
    "suite",
    "kind",
    "psnr",
    "ssim",
    "psnr_gain",
    "ssim_gain",
    "size",
    "seconds",
    "megapixels_per_s",
    "peak_mem_mb",
)


def _clean(value: Any) -> Any:
    # JSON has no inf/nan: a perfect PSNR (identical images) becomes null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(records: Sequence[dict[str, Any]]) -> str:
    """A JSON list, one object per (model, kind) or (model, size)."""
    return json.dumps([{k: _clean(v) for k, v in r.items()} for r in records], indent=2)


def _columns(records: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r if k not in keys)
    return [k for k in _FIRST if k in keys] + [k for k in keys if k not in _FIRST]


def to_csv(records: Sequence[dict[str, Any]]) -> str:
    """CSV with a header row; the columns are the union of the records' keys."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(records), lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for a missing or non-finite number, a list (the speed suite's
    ``runtimes``) as its items joined by ``;``, a table as JSON."""
    if _clean(value) is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _models(records: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in records))


def _fmt_psnr(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "inf"


def _fmt_gain(v: float, digits: int) -> str:
    return f"{v:+.{digits}f}" if math.isfinite(v) else "-"


def quality_table(records: Sequence[dict[str, Any]], title: str) -> Table:
    """Rows are test sets (and the average); each model has PSNR and SSIM columns.

    With the identity baseline in the run, each model also shows its PSNR gain over it.
    Per-image records (``--per-image``) are left to :func:`per_image_table`.
    """
    records = [r for r in records if "image" not in r]
    models = _models(records)
    has_gain = any("psnr_gain" in r for r in records)
    table = Table(title=title)
    table.add_column("Degradation")
    for m in models:
        table.add_column(f"{m}\nPSNR", justify="right")
        table.add_column(f"{m}\nSSIM", justify="right")
        if has_gain and m != IDENTITY:
            table.add_column(f"{m}\nΔPSNR", justify="right")
    by_key = {(r["model"], r["kind"]): r for r in records}
    kinds = list(dict.fromkeys((r["kind"], r["title"]) for r in records))
    for i, (kind, row_title) in enumerate(kinds):
        cells = [row_title]
        for m in models:
            r = by_key.get((m, kind))
            if r is None:
                cells += ["-", "-"] + (["-"] if has_gain and m != IDENTITY else [])
                continue
            cells += [_fmt_psnr(r["psnr"]), f"{r['ssim']:.4f}"]
            if has_gain and m != IDENTITY:
                cells.append(_fmt_gain(r["psnr_gain"], 2))
        table.add_row(*cells, end_section=i == len(kinds) - 2)
    return table


def per_image_table(records: Sequence[dict[str, Any]], title: str) -> Table:
    """One row per (test set, image): each model's PSNR, and its gain where a baseline ran."""
    records = [r for r in records if "image" in r]
    models = _models(records)
    has_gain = any("psnr_gain" in r for r in records)
    table = Table(title=title)
    table.add_column("Degradation")
    table.add_column("Image", overflow="fold")  # file names wrap whole rather than lose their end
    for m in models:
        table.add_column(f"{m}\nPSNR", justify="right")
        if has_gain and m != IDENTITY:
            table.add_column(f"{m}\nΔPSNR", justify="right")
    by_key = {(r["model"], r["kind"], r["image"]): r for r in records}
    rows = list(dict.fromkeys((r["kind"], r["title"], r["image"]) for r in records))
    for i, (kind, row_title, image) in enumerate(rows):
        cells = [row_title, image]
        for m in models:
            r = by_key.get((m, kind, image))
            gain = has_gain and m != IDENTITY
            if r is None:
                cells += ["-"] + (["-"] if gain else [])
                continue
            cells.append(_fmt_psnr(r["psnr"]))
            if gain:
                cells.append(_fmt_gain(r["psnr_gain"], 2))
        last_of_kind = i + 1 == len(rows) or rows[i + 1][0] != kind
        table.add_row(*cells, end_section=last_of_kind)
    return table


def speed_table(records: Sequence[dict[str, Any]], title: str) -> Table:
    """One row per (model, size, path): median latency, megapixels per second, peak memory."""
    threads = sorted({r["threads"] for r in records if r.get("threads")})
    table = Table(
        title=title,
        caption="Peak MiB: growth of CUDA's allocated memory, or of the CPU's resident memory "
        "(docs/bench.md)" + (f"; {', '.join(map(str, threads))} CPU threads" if threads else ""),
    )
    for col, justify in (
        ("Model", "left"),
        ("Size", "left"),
        ("Path", "left"),
        ("Median s", "right"),
        ("MP/s", "right"),
        ("Peak MiB", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in records:
        mem = "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        table.add_row(
            r["model"],
            r["size"],
            r.get("compute") or r["device"],
            f"{r['seconds']:.4f}",
            f"{r['megapixels_per_s']:.4g}",
            mem,
        )
    return table
