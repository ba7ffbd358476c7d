"""``anyrestore weights``: list, describe, download, verify, convert and add checkpoints."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from anyrestore.cli.common import finite, print_table
from anyrestore.cli.errors import emit, say
from anyrestore.errors import UsageError, WeightsError

if TYPE_CHECKING:
    from anyrestore.weights import WeightsEntry

weights_app = typer.Typer(
    help="Manage model weights: the manifest, the Hub cache and the embedded default.",
    no_args_is_help=True,
)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _row(entry: WeightsEntry, default: WeightsEntry | None) -> dict[str, Any]:
    """An entry as `list --json` and `info --json` print it: the manifest's fields and
    whether its file is here."""
    from anyrestore.weights import cached_file, left_out_of_wheel

    cached = cached_file(entry)
    return {
        **entry.to_dict(),
        "default": default is not None and entry.name == default.name,
        "embedded_present": entry.embedded_path is not None and entry.embedded_path.is_file(),
        "cached": cached is not None,
        "cached_path": str(cached) if cached else None,
        # an older version this wheel-installed package lacks (a source checkout has it)
        "source_checkout_only": left_out_of_wheel(entry),
    }


def _availability(row: dict[str, Any]) -> list[str]:
    """Where an entry's file is: embedded, cached, or (else) only in a source checkout."""
    where = [
        w for w, ok in (("embedded", row["embedded_present"]), ("cached", row["cached"])) if ok
    ]
    return where or (["in a source checkout"] if row["source_checkout_only"] else [])


@weights_app.command("list")
def list_command(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List the manifest's checkpoints and whether each is embedded or cached."""
    from anyrestore.weights import default_entry, list_entries, manifest_path

    entries = list_entries()
    default = default_entry()
    rows = [_row(e, default) for e in entries]
    if json_output:
        emit(json.dumps(finite(rows), indent=2))
        return
    if not rows:
        say(f"no weights in the manifest ({manifest_path()})")
        return
    # What each entry restores, once under the table when they all restore the same: a
    # column repeating it would wrap every row over several lines of a narrow terminal.
    summaries = [kinds_summary(r["trained_for"]) for r in rows]
    shared = summaries[0] if len(rows) > 1 and len(set(summaries)) == 1 else None
    table = Table(
        title="anyrestore weights",
        caption=f"every entry is trained for {shared}" if shared else None,
    )
    # Names are what --weights takes: never cut, however narrow the terminal; the list of
    # kinds wraps instead.
    table.add_column("name", no_wrap=True)
    columns = ["model", "size", "license", "available"]
    if not shared:
        columns.insert(1, "trained for")
    for col in columns:
        table.add_column(col, justify="right" if col == "size" else "left")
    for r, summary in zip(rows, summaries, strict=True):
        where = _availability(r)
        available = ", ".join(where) or ("on the Hub" if r["repo_id"] else "missing")
        name = r["name"] + ("\n(default)" if r["default"] else "")
        cells = [r["model"], _size(r["size"]), r["license"], available]
        if not shared:
            cells.insert(1, summary)
        table.add_row(name, *cells)
    print_table(table)


def kinds_summary(kinds: list[str]) -> str:
    """A short "trained for": the noise levels on one item and the composites counted
    (``weights list --json`` keeps every name)."""
    levels = [k.removeprefix("noise_") for k in kinds if k.startswith("noise_")]
    composites = [k for k in kinds if "+" in k]
    rest = [
        k.replace("_", " ") for k in kinds if k not in composites and not k.startswith("noise_")
    ]
    parts = ([f"noise {'/'.join(levels)}"] if levels else []) + rest
    if composites:
        parts.append(f"{len(composites)} composite{'s' if len(composites) > 1 else ''}")
    return ", ".join(parts)


@weights_app.command("info")
def info_command(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="A manifest entry, or a model name (its preferred entry)."
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Everything the manifest says of one checkpoint: what it is for, how it was trained, where it is."""
    from anyrestore.weights import default_entry
    from anyrestore.weights.resolve import entry_for

    row = _row(entry_for(name, paths_too=False), default_entry())
    if json_output:
        emit(json.dumps(finite(row), indent=2))
        return
    where = _availability(row)
    if row["repo_id"]:
        where.append(f"Hub {row['repo_id']}/{row['filename']}@{row['revision'][:12]}")
    lines = [
        f"{row['name']}{' (default)' if row['default'] else ''}: {row['model']} ({row['arch']})",
        textwrap.fill(row["description"], 88, initial_indent="  ", subsequent_indent="  ")
        if row["description"]
        else None,
        f"  trained for: {', '.join(row['trained_for'])}",
        f"  license {row['license']}, {_size(row['size'])}, sha256 {row['sha256']}",
        f"  available: {', '.join(where) or 'missing'}",
    ]
    facts = row["training"]
    if facts:
        lines.append("  training:")
        lines += [f"    {key} = {json.dumps(facts[key])}" for key in sorted(facts)]
    emit("\n".join(line for line in lines if line is not None))


@weights_app.command("download")
def download_command(
    names: Annotated[
        list[str], typer.Argument(metavar="NAME", help="Manifest entry names (or model names).")
    ],
) -> None:
    """Fetch checkpoints into the Hub cache (embedded ones are already installed) and verify
    their sha256; prints each local path."""
    from anyrestore.weights.resolve import entry_for, resolve_entry

    for name in names:
        path = resolve_entry(name)
        if entry_for(name, paths_too=False).embedded_path == path:
            say(f"{name}: embedded in the package, nothing to download; sha256 verified")
        else:
            say(f"{name}: sha256 verified")
        emit(str(path))


@weights_app.command("verify")
def verify_command(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAME", help="Entries to check (default: all).")
    ] = None,
) -> None:
    """Re-hash every embedded and cached checkpoint; bad cached copies are deleted. Exit 4 on a mismatch or a missing embedded file."""
    from anyrestore.weights import left_out_of_wheel, verify_entries
    from anyrestore.weights.resolve import entry_for

    checks = verify_entries(names or None)
    for name in names or []:
        entry = entry_for(name, paths_too=False)
        if left_out_of_wheel(entry):
            say(f"{entry.name}: comes with a source checkout only; nothing here to verify")
    if not checks:
        say("nothing to verify: no embedded or cached weights")
        return
    table = Table(title="anyrestore weights verify")
    table.add_column("name", no_wrap=True)
    for col in ("source", "status"):
        table.add_column(col)
    table.add_column("path", overflow="fold")  # wrapped, never cut: it may be copied
    for c in checks:
        status = "ok" if c.ok else "MISSING" if c.missing else "MISMATCH"
        table.add_row(c.name, c.source, status, str(c.path))
    print_table(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        for c in bad:
            say(c.detail)
        names_bad = ", ".join(sorted({c.name for c in bad}))
        raise WeightsError(f"{len(bad)} of {len(checks)} files failed verification ({names_bad})")


@weights_app.command("convert")
def convert_command(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="A model's bare weights: .safetensors without anyrestore's metadata, or a "
            "torch file (.pt, .pth, .ckpt, ...), read as tensors only.",
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME", help="The variant they belong to.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="The .safetensors file to write.")
    ],
    dtype: Annotated[
        str, typer.Option(metavar="fp16|bf16|fp32", help="Weight dtype: fp16, bf16 or fp32.")
    ] = "fp32",
) -> None:
    """Make a loadable checkpoint of a model's bare weights (every key and shape checked)."""
    from anyrestore.training.export import weight_dtype
    from anyrestore.weights import convert_state_dict

    path = convert_state_dict(source, model, output, dtype=weight_dtype(dtype))
    say(f"converted {source} ({model}, {dtype}) to {path}")
    emit(str(path))


@weights_app.command("add")
def add_command(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The trained .safetensors checkpoint.")
    ],
    name: Annotated[str, typer.Option(metavar="NAME", help="Entry name, used as --weights NAME.")],
    license: Annotated[
        str, typer.Option("--license", metavar="SPDX-ID", help="SPDX license id of the weights.")
    ],
    model: Annotated[
        str | None, typer.Option(metavar="MODEL", help="Registry variant (default: from metadata).")
    ] = None,
    trained_for: Annotated[
        str | None,
        typer.Option(metavar="TASKS", help="Comma-separated tasks (default: from metadata)."),
    ] = None,
    description: Annotated[
        str, typer.Option(metavar="TEXT", help="One line for `weights list`.")
    ] = "",
    repo_id: Annotated[
        str | None, typer.Option(metavar="REPO", help="Hub repo the file is uploaded to.")
    ] = None,
    filename: Annotated[
        str | None,
        typer.Option(metavar="FILENAME", help="File name in the repo (default: FILE's)."),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(metavar="COMMIT", help="Pinned 40-hex commit of the upload.")
    ] = None,
    embed: Annotated[
        bool,
        typer.Option(
            help="Copy FILE beside the manifest (the package's, or ANYRESTORE_MANIFEST's) as an "
            "embedded checkpoint."
        ),
    ] = False,
    default: Annotated[bool, typer.Option(help="Make it the default checkpoint.")] = False,
    write: Annotated[
        bool, typer.Option(help="Add the entry to the manifest instead of printing it.")
    ] = False,
    prefer: Annotated[
        bool,
        typer.Option(
            help="With --write: place it before the model's other entries, so that "
            "--model MODEL loads it (default: last)."
        ),
    ] = False,
) -> None:
    """Make a manifest entry for a trained checkpoint (sha256, size, training facts from the file)."""
    from anyrestore.weights import add_entry, default_entry, embed_file, manifest_entry_for
    from anyrestore.weights.authoring import embedded_target
    from anyrestore.weights.manifest import (
        is_entry_name,
        is_license_expression,
        is_pinned_revision,
        manifest_path,
        parse_manifest,
    )

    if not is_entry_name(name):
        raise UsageError(
            f"--name {name!r}: use only letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, and no file suffix (.safetensors, .pt, ...)"
        )
    from anyrestore.models import list_models

    if name in list_models():  # --model NAME would mean this entry, whichever model it holds
        raise UsageError(
            f"--name {name!r} is a model variant's name; name the checkpoint (e.g. "
            f"{name}-mydata-v1)"
        )
    if (revision or filename) and not repo_id:
        raise UsageError("--revision and --filename describe a Hub upload: add --repo-id")
    if repo_id and not revision:
        raise UsageError(f"--repo-id {repo_id}: add --revision, the upload's 40-hex commit hash")
    if prefer and not write:
        raise UsageError("--prefer places the entry in the manifest: add --write")
    if not embed and not (repo_id and revision):
        raise UsageError(
            "say where the file lives: --repo-id and --revision (its Hub upload) or --embed"
        )
    if not is_license_expression(license):
        raise UsageError(
            f"--license {license!r}: give an SPDX id or expression such as MIT, Apache-2.0 or "
            "CC-BY-4.0 (https://spdx.org/licenses/), or LicenseRef-NAME for your own"
        )
    if revision and not is_pinned_revision(revision):
        raise UsageError(
            f"--revision {revision!r}: give the upload's full 40-hex commit hash (a branch "
            "or tag can move under the entry's sha256)"
        )
    tasks = [t.strip() for t in trained_for.split(",") if t.strip()] if trained_for else None
    if trained_for is not None and not tasks:
        raise UsageError(f"--trained-for {trained_for!r} names no kind (e.g. noise,rain,haze)")
    kwargs = dict(
        name=name,
        license=license,
        model=model,
        trained_for=tasks,
        description=description,
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        default=default,
    )
    # Validate everything (the manifest it joins too) before copying anything into the package.
    text = manifest_entry_for(
        file, embedded=f"weights/embedded/{name}.safetensors" if embed else None, **kwargs
    )
    add_entry(text, check_only=True, prefer=prefer)  # a printed entry must fit the manifest too
    before = default_entry() if write and manifest_path().exists() else None
    copied: Path | None = None
    if embed:
        sha256 = parse_manifest(text, source="new entry")[0].sha256
        target = embedded_target(name)
        existed = target.exists()
        say(f"copied {file} to {embed_file(file, name, sha256=sha256)}")
        copied = None if existed else target
    if write:
        try:
            path, demoted = add_entry(text, prefer=prefer)
        except BaseException:
            if copied is not None:  # no entry names it: the copy would only take space
                copied.unlink(missing_ok=True)
            raise
        say(f"added {name!r} to {path}")
        for old in demoted:
            say(f"{old!r} is no longer the default")
        after = default_entry()
        if not default and before is not None and after is not None and after.name != before.name:
            say(
                f"{after.name!r} is now the default: the first embedded entry, as no entry is marked"
            )
    else:
        emit(text.rstrip("\n"))
