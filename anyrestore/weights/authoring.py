"""Adding a trained checkpoint to the manifest (``anyrestore weights add``).

The entry's facts come from the file itself: sha256 and size from its bytes, ``arch`` from
its metadata, and what it was trained for from the metadata keys the trainer writes
(``trained_for``: JSON list, ``training``: JSON object, any other extra key goes into
``training`` too).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from anyrestore.errors import UsageError, WeightsError
from anyrestore.files import atomic_path, atomic_write
from anyrestore.weights.checkpoint import checkpoint_config, metadata_list, read_metadata
from anyrestore.weights.manifest import (
    WeightsEntry,
    embedded_root,
    manifest_path,
    parse_manifest,
    read_manifest_text,
)
from anyrestore.weights.resolve import sha256_file

__all__ = ["add_entry", "embed_file", "manifest_entry_for"]

_RESERVED = {
    "format",
    "format_version",
    "arch",
    "config",
    "name",
    "model",
    "trained_for",
    "training",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    """A TOML literal for plain JSON-like data (JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's, but JSON leaves DEL as it is and TOML forbids it raw.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + " }"
        )
    if value is None:
        return '""'
    return json.dumps(str(value))


def manifest_entry_for(
    path: str | os.PathLike[str],
    *,
    name: str,
    license: str,
    model: str | None = None,
    trained_for: list[str] | None = None,
    description: str = "",
    repo_id: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    embedded: str | None = None,
    default: bool = False,
) -> str:
    """The ``[[weights]]`` TOML block for the checkpoint at ``path``, validated by the manifest parser."""
    path = Path(path)
    meta = read_metadata(path)
    checkpoint_config(path, meta)  # an entry must describe a checkpoint that loads
    from anyrestore.models import get_spec, list_models

    named = meta.get("model") or meta.get("name")
    # A custom name in the metadata (checkpoint_config allows one) is what --model replaces
    if model and named in list_models() and model != named:
        raise UsageError(f"{path} is a checkpoint of {named} (its metadata), not of {model}")
    model = model or named
    if not model:
        raise UsageError(f"{path}: its metadata names no model variant; pass --model")

    try:
        arch = get_spec(model).arch
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if arch != meta["arch"]:
        raise UsageError(f"{path} holds a network of {meta['arch']}; {model} is of {arch}")
    if trained_for is None:
        trained_for = metadata_list(meta.get("trained_for"))
    if not trained_for:
        raise UsageError(
            f"{path}: its metadata says nothing about what it was trained for; pass --trained-for"
        )
    training = _decode(meta["training"]) if "training" in meta else {}
    if not isinstance(training, dict):
        training = {"notes": training}
    for key in sorted(set(meta) - _RESERVED):
        training.setdefault(key, _decode(meta[key]))
    if repo_id and not filename:
        filename = path.name
    fields: dict[str, Any] = {
        "name": name,
        "model": model,
        "arch": meta["arch"],
        "trained_for": list(trained_for),
        "description": description,
        "license": license,
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
    }
    for key, value in (
        ("repo_id", repo_id),
        ("filename", filename),
        ("revision", revision),
        ("embedded", embedded),
    ):
        if value:
            fields[key] = value
    if default:
        fields["default"] = True
    lines = ["[[weights]]"] + [f"{k} = {_toml_value(v)}" for k, v in fields.items()]
    if training:
        lines.append("[weights.training]")
        lines += [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in training.items()]
    text = "\n".join(lines) + "\n"
    try:  # refuse to emit an entry the loader would reject: the options made it so
        parse_manifest(text, source=f"entry for {path}")
    except WeightsError as exc:
        raise UsageError(str(exc)) from None
    return text


def embedded_target(name: str) -> Path:
    """Where ``embed_file`` copies the checkpoint of entry ``name``."""
    return embedded_root() / f"weights/embedded/{name}.safetensors"


def embed_file(path: str | os.PathLike[str], name: str, *, sha256: str | None = None) -> Path:
    """Copy a checkpoint to ``weights/embedded/`` where the manifest in use resolves its
    ``embedded`` paths (the package's folder for the packaged manifest, else the manifest's
    own folder); returns the copy's path.

    ``sha256``: what the copy must hash to, the entry's (a checkpoint a running training
    replaces between the entry and the copy would leave an entry no load accepts).
    """
    target = embedded_target(name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
            if sha256 is not None and sha256_file(tmp) != sha256:
                raise UsageError(
                    f"{path} changed while it was being added (no longer sha256 "
                    f"{sha256[:12]}...); add it again once it is final"
                )
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def add_entry(
    entry_text: str,
    manifest: str | os.PathLike[str] | None = None,
    *,
    check_only: bool = False,
    prefer: bool = False,
) -> tuple[Path, list[str]]:
    """Add an entry to the manifest file atomically, after checking the result still parses.

    The entry goes last, or with ``prefer`` just before the first entry of the same model, so
    that ``--model MODEL`` (which takes the first of a model's entries after a default) loads
    it. A new default takes over: ``default = true`` is removed from the entries that had it,
    whose names are returned. ``check_only`` validates the result without writing it.
    """
    # The packaged manifest is a symlink to the repository's top-level file: write the real file.
    path = (Path(manifest) if manifest is not None else manifest_path()).resolve()
    old = read_manifest_text(path) if path.exists() else "schema_version = 1\n"
    entries = parse_manifest(old, source=str(path))  # a broken manifest stays a WeightsError
    added = parse_manifest(entry_text, source="new entry")[0]
    demoted: list[str] = []
    if added.default:
        demoted = [e.name for e in entries if e.default]
        old = _without_defaults(old)
        if any(e.default for e in parse_manifest(old, source=str(path))):
            raise _not_tables(path, "--default")
    at = _first_entry_line(old, added.model, entries) if prefer else None
    if at is None:
        new = old.rstrip("\n") + "\n\n" + entry_text
    else:
        lines = old.splitlines(keepends=True)
        new = "".join(lines[:at]) + entry_text.rstrip("\n") + "\n\n" + "".join(lines[at:])
    try:  # the manifest parsed without the entry: the entry clashes (a name it has already)
        parse_manifest(new, source=str(path))
    except WeightsError as exc:
        raise UsageError(str(exc)) from None
    if not check_only:
        atomic_write(path, new.encode("utf-8"))
    return path, demoted


def _first_entry_line(text: str, model: str, entries: list[WeightsEntry]) -> int | None:
    """Index of the line where the first ``[[weights]]`` table of ``model`` begins, counting
    the comment lines right above its header as part of it; None if the model has none."""
    index = next((i for i, e in enumerate(entries) if e.model == model), None)
    if index is None:
        return None
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _ENTRY_HEADER.fullmatch(line)]
    if len(headers) != len(entries):  # not one header line per entry: no line to place it at
        raise _not_tables(None, "--prefer")
    at = headers[index]
    while at > 0 and lines[at - 1].lstrip().startswith("#"):
        at -= 1
    return at


# A ``[[weights]]`` header line, however TOML lets it be spaced ("[[ weights ]]").
_ENTRY_HEADER = re.compile(r"[ \t]*\[\[[ \t]*weights[ \t]*\]\][ \t]*(#.*)?\n?")


def _not_tables(path: Path | None, option: str) -> UsageError:
    """``option`` edits the manifest's ``[[weights]]`` tables line by line; a manifest that
    writes its entries another way (an inline array, a quoted header) is left to a hand edit."""
    where = f" {path}" if path else ""
    return UsageError(
        f"{option} edits [[weights]] tables, and the manifest{where} writes its entries "
        "another way (inline tables or quoted headers): add the entry without it, then edit "
        "the manifest by hand"
    )


# An entry's ``default = true`` line, as ``weights add`` and hand edits write it.
_DEFAULT_LINE = re.compile(r"[ \t]*default[ \t]*=[ \t]*true[ \t]*(#.*)?\n?")
_TABLE_HEADER = re.compile(r"[ \t]*\[\[?[\w.\"' -]+\]\]?[ \t]*(#.*)?\n?")


def _without_defaults(text: str) -> str:
    """``text`` without the ``default = true`` lines of its ``[[weights]]`` tables; a key of that
    name in a sub-table (a training fact) is data and stays."""
    kept, in_entry = [], False
    for line in text.splitlines(keepends=True):
        if _TABLE_HEADER.fullmatch(line):
            in_entry = bool(_ENTRY_HEADER.match(line))
        if not (in_entry and _DEFAULT_LINE.fullmatch(line)):
            kept.append(line)
    return "".join(kept)
