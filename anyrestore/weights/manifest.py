"""``weights_manifest.toml``: where each checkpoint lives and what it was trained for.

Weights are data, not code (timm's pretrained cfg tables): the manifest names every
checkpoint, its Hub coordinates pinned to a commit, its sha256 and size, its license, and
optionally a copy embedded in the package. ``docs/weights.md`` documents the schema.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyrestore.errors import WeightsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "MANIFEST_ENV",
    "SCHEMA_VERSION",
    "WeightsEntry",
    "default_entry",
    "embedded_root",
    "entries_for_model",
    "find_entry",
    "left_out_of_wheel",
    "list_entries",
    "manifest_is_packaged",
    "manifest_path",
    "parse_manifest",
    "wheel_weights",
]

#: Environment variable naming a manifest to use instead of the packaged one.
MANIFEST_ENV = "ANYRESTORE_MANIFEST"
SCHEMA_VERSION = 1

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../anyrestore
_PACKAGED_MANIFEST = Path(__file__).parent / "weights_manifest.toml"
#: The packaged manifest's ``embedded`` folder, relative to the package directory.
_EMBEDDED_FOLDER = Path("weights", "embedded")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_pinned_revision(revision: str) -> bool:
    """Whether ``revision`` is a full commit hash (a branch or tag can move under a sha256)."""
    return bool(_COMMIT.fullmatch(revision))


_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*\+?")
_LICENSE_TOKENS = re.compile(r"\(|\)|[^\s()]+")


def is_license_expression(text: str) -> bool:
    """Whether ``text`` reads as an SPDX license expression: ``MIT``, ``Apache-2.0``,
    ``(MIT OR Apache-2.0)``, ``GPL-2.0-or-later WITH Classpath-exception-2.0``,
    ``LicenseRef-mine``. Syntax only: the id list changes and a custom ``LicenseRef-`` is
    allowed, but a sentence ("see README", "MIT license") is not a license a tool can read.
    """
    depth, want_id = 0, True
    for token in _LICENSE_TOKENS.findall(text):
        if token == "(":
            if not want_id:
                return False
            depth += 1
        elif token == ")":
            if want_id or depth == 0:
                return False
            depth -= 1
        elif token in ("AND", "OR", "WITH", "and", "or", "with"):  # SPDX allows either case
            if want_id:
                return False
            want_id = True
        elif want_id and _LICENSE_ID.fullmatch(token):
            want_id = False
        else:
            return False
    return depth == 0 and not want_id


_REQUIRED = ("name", "model", "arch", "trained_for", "sha256", "size", "license")
_HUB_KEYS = ("repo_id", "filename", "revision")
_KNOWN = set(_REQUIRED) | set(_HUB_KEYS) | {"embedded", "default", "description", "training"}


@dataclass(frozen=True)
class WeightsEntry:
    """One checkpoint listed in the manifest."""

    name: str
    model: str  # registry variant, e.g. "anyir_s"
    arch: str  # architecture stored in the file's metadata, e.g. "anyir"
    trained_for: tuple[str, ...]  # degradations / tasks, e.g. ("noise", "rain")
    sha256: str
    size: int
    license: str
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None  # a 40-hex commit, so a cached copy needs no network
    embedded: str | None = None  # path as written in the manifest
    embedded_path: Path | None = None  # the same, resolved to an absolute path
    default: bool = False
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def on_hub(self) -> bool:
        return self.repo_id is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for ``weights list --json``)."""
        return {
            "name": self.name,
            "model": self.model,
            "arch": self.arch,
            "trained_for": list(self.trained_for),
            "sha256": self.sha256,
            "size": self.size,
            "license": self.license,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "embedded": self.embedded,
            "default": self.default,
            "description": self.description,
            "training": self.training,
        }


def manifest_path() -> Path:
    """The manifest in use: ``$ANYRESTORE_MANIFEST`` if set, else the one shipped in the package."""
    override = os.environ.get(MANIFEST_ENV)
    return Path(override).expanduser() if override else _PACKAGED_MANIFEST


#: Suffixes that make ``--weights`` read a name as a file: .safetensors and the files
#: torch.save and friends write (``weights.convert.PICKLE_SUFFIXES``); an entry named so
#: could never be loaded by its name.
FILE_SUFFIXES = frozenset(
    {".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}
)


def is_entry_name(name: str) -> bool:
    """Whether ``name`` can name an entry: it is used as ``--weights NAME`` and a file name."""
    return bool(_NAME.fullmatch(name)) and Path(name).suffix.lower() not in FILE_SUFFIXES


def _is_packaged(path: Path) -> bool:
    return path.resolve() == _PACKAGED_MANIFEST.resolve()


def manifest_is_packaged() -> bool:
    """Whether the manifest in use is the one shipped in the package (not ANYRESTORE_MANIFEST's)."""
    return _is_packaged(manifest_path())


def embedded_root(path: Path | None = None) -> Path:
    """The folder the ``embedded`` paths of the manifest at ``path`` (default: the one in
    use) are relative to, and where ``weights add --embed`` copies a checkpoint: the package
    directory for the packaged manifest ("weights/embedded/x.safetensors"), any other
    manifest's own folder."""
    path = manifest_path() if path is None else path
    return _PACKAGE_DIR if _is_packaged(path) else path.resolve().parent


def parse_manifest(
    text: str, *, source: str = "manifest", embedded_root: Path | None = None
) -> list[WeightsEntry]:
    """Parse and validate manifest TOML; every problem is a WeightsError naming the entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WeightsError(f"{source} is not valid TOML ({exc})") from None
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise WeightsError(
            f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    unknown = sorted(set(data) - {"schema_version", "weights"})
    if unknown:  # a misspelt [[weights]] would leave the manifest silently empty
        raise WeightsError(
            f"{source}: unknown top-level keys {', '.join(unknown)} (entries are [[weights]])"
        )
    raw = data.get("weights", [])
    if not isinstance(raw, list):
        raise WeightsError(f"{source}: 'weights' must be an array of tables ([[weights]])")
    entries = [_parse_entry(item, i, source, embedded_root) for i, item in enumerate(raw)]
    seen: dict[str, str] = {}
    files: dict[tuple[str | None, str | None, str | None], WeightsEntry] = {}
    stored: dict[Path, WeightsEntry] = {}
    for e in entries:
        # Names are also file names (--embed, the Hub cache): on macOS and Windows two that
        # differ only in case would be one file.
        key = e.name.casefold()
        if key in seen:
            other = seen[key]
            twice = "appears twice" if other == e.name else f"differs from {other!r} only in case"
            raise WeightsError(f"{source}: weights name {e.name!r} {twice}")
        seen[key] = e.name
        if e.embedded_path is not None:
            same = stored.setdefault(e.embedded_path, e)
            if (same.sha256, same.size) != (e.sha256, e.size):
                raise WeightsError(
                    f"{source}: entries {same.name!r} and {e.name!r} name the same embedded "
                    f"file ({e.embedded}) with different sha256 or size; one is wrong"
                )
        if not e.on_hub:
            continue
        same = files.setdefault((e.repo_id, e.filename, e.revision), e)
        if (same.sha256, same.size) != (e.sha256, e.size):
            raise WeightsError(
                f"{source}: entries {same.name!r} and {e.name!r} name the same Hub file "
                f"({e.repo_id}/{e.filename}) with different sha256 or size; one is wrong"
            )
    defaults = [e.name for e in entries if e.default]
    if len(defaults) > 1:
        raise WeightsError(
            f"{source}: more than one entry has default = true ({', '.join(defaults)})"
        )
    return entries


def _parse_entry(item: Any, index: int, source: str, embedded_root: Path | None) -> WeightsEntry:
    where = f"{source}: weights[{index}]"
    if not isinstance(item, Mapping):
        raise WeightsError(f"{where} is not a table")
    if isinstance(item.get("name"), str):
        where = f"{source}: entry {item['name']!r}"
    missing = [k for k in _REQUIRED if k not in item]
    if missing:
        raise WeightsError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(item) - _KNOWN)
    if unknown:
        raise WeightsError(f"{where} has unknown keys {', '.join(unknown)}")

    def text(key: str, required: bool = True) -> str | None:
        value = item.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise WeightsError(f"{where}: {key} must be a non-empty string")
        return value

    name = text("name")
    assert name is not None
    if not _NAME.fullmatch(name):
        raise WeightsError(f"{where}: name may use only letters, digits, '.', '_' and '-'")
    if not is_entry_name(name):
        raise WeightsError(
            f"{where}: name {name!r} ends like a file name; --weights would read a file"
        )
    sha = (text("sha256") or "").lower()
    if not _SHA256.fullmatch(sha):
        raise WeightsError(f"{where}: sha256 must be 64 hex digits")
    size = item["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise WeightsError(f"{where}: size must be a positive integer (bytes)")
    trained_for = item["trained_for"]
    if isinstance(trained_for, str):
        trained_for = [trained_for]
    if (
        not isinstance(trained_for, list)
        or not trained_for
        or not all(isinstance(t, str) and t for t in trained_for)
    ):
        raise WeightsError(f"{where}: trained_for must be a non-empty list of strings")
    hub = {k: text(k, required=False) for k in _HUB_KEYS}
    if any(hub.values()) and not all(hub.values()):
        raise WeightsError(f"{where}: repo_id, filename and revision go together")
    if hub["revision"] and not is_pinned_revision(hub["revision"]):
        raise WeightsError(f"{where}: revision must be a pinned 40-hex commit hash")
    if hub["repo_id"] and not _is_repo_id(hub["repo_id"]):
        raise WeightsError(
            f"{where}: repo_id {hub['repo_id']!r} is not a Hub repository (org/name)"
        )
    if hub["filename"] and not _is_repo_path(hub["filename"]):
        raise WeightsError(
            f"{where}: filename {hub['filename']!r} must be a path inside the repository "
            "(relative, with / between folders, no '..')"
        )
    embedded = text("embedded", required=False)
    if not embedded and not hub["repo_id"]:
        raise WeightsError(f"{where} needs Hub coordinates (repo_id/filename/revision) or embedded")
    embedded_path = None
    if embedded:
        p = Path(embedded)
        embedded_path = p if p.is_absolute() else (embedded_root or _PACKAGE_DIR) / p
    license = text("license") or ""
    if not is_license_expression(license):
        raise WeightsError(
            f"{where}: license {license!r} is not an SPDX id or expression (MIT, Apache-2.0, "
            "CC-BY-4.0, LicenseRef-...)"
        )
    model, arch = text("model") or "", text("arch") or ""
    _check_variant(where, name, model, arch)
    default = item.get("default", False)
    training = item.get("training", {})
    description = item.get("description", "")
    if not isinstance(default, bool):
        raise WeightsError(f"{where}: default must be true or false")
    if not isinstance(training, Mapping):
        raise WeightsError(f"{where}: training must be a table")
    if not isinstance(description, str):
        raise WeightsError(f"{where}: description must be a string")
    return WeightsEntry(
        name=name,
        model=model,
        arch=arch,
        trained_for=tuple(trained_for),
        sha256=sha,
        size=size,
        license=license,
        repo_id=hub["repo_id"],
        filename=hub["filename"],
        revision=hub["revision"],
        embedded=embedded,
        embedded_path=embedded_path,
        default=default,
        description=description,
        training=json.loads(json.dumps(dict(training), default=str)),
    )


def _is_repo_id(repo_id: str) -> bool:
    """What the Hub library itself accepts as a repository id (it refuses the rest on use)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def _is_repo_path(name: str) -> bool:
    parts = name.split("/")
    return (
        not name.startswith("/")
        and "\\" not in name
        and all(part not in ("", ".", "..") for part in parts)
    )


def _check_variant(where: str, name: str, model: str, arch: str) -> None:
    """A registered variant's architecture must be the entry's (a variant of another arch
    could never load the file); an unregistered model name is left to load time. An entry
    named like another variant would take ``--model NAME`` over, running ``model`` instead."""
    from anyrestore.models import get_spec, list_models

    if name != model and name in list_models():
        raise WeightsError(
            f"{where}: name {name!r} is a model variant's name, but the entry holds {model}; "
            "--model would load it in place of the variant: rename the entry"
        )
    if model in list_models() and get_spec(model).arch != arch:
        raise WeightsError(
            f"{where} says model {model!r} but arch {arch!r} ({model} is a "
            f"{get_spec(model).arch} variant)"
        )


def read_manifest_text(path: Path) -> str:
    """The text of the manifest at ``path``; one that cannot be read is a WeightsError (a
    missing file is left to the caller: FileNotFoundError)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        raise WeightsError(f"weights manifest {path} is not UTF-8 text (TOML)") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights manifest {path} ({exc.strerror or exc})") from None


def list_entries(manifest: str | os.PathLike[str] | None = None) -> list[WeightsEntry]:
    """Every entry of the manifest in use (or of ``manifest``), in file order."""
    path = Path(manifest) if manifest is not None else manifest_path()
    try:
        text = read_manifest_text(path)
    except FileNotFoundError:
        if manifest is None and MANIFEST_ENV not in os.environ:
            return []  # a source tree without a manifest simply has no weights
        raise WeightsError(f"weights manifest not found: {path}") from None
    return parse_manifest(text, source=str(path), embedded_root=embedded_root(path))


def find_entry(name: str, manifest: str | os.PathLike[str] | None = None) -> WeightsEntry | None:
    """The entry called ``name``, or None.

    Under a private manifest (``ANYRESTORE_MANIFEST``) a name it lacks is looked up among the
    package's own weights too: recipes and scripts name those, and the package holds them
    whichever manifest is in use. The private manifest's entry wins a name both have.
    """
    found = next((e for e in list_entries(manifest) if e.name == name), None)
    if found is None and manifest is None and not manifest_is_packaged():
        shipped = list_entries(_PACKAGED_MANIFEST) if _PACKAGED_MANIFEST.is_file() else []
        found = next((e for e in shipped if e.name == name), None)
    return found


def entries_for_model(
    model_name: str, manifest: str | os.PathLike[str] | None = None
) -> list[WeightsEntry]:
    """Entries for a registry variant; the first is the preferred one (a default entry goes first)."""
    found = [e for e in list_entries(manifest) if e.model == model_name]
    return sorted(found, key=lambda e: not e.default)


def default_entry(manifest: str | os.PathLike[str] | None = None) -> WeightsEntry | None:
    """The checkpoint used when no weights are named: ``default = true``, else the first embedded one."""
    return _default_of(list_entries(manifest))


def _default_of(entries: list[WeightsEntry]) -> WeightsEntry | None:
    marked = [e for e in entries if e.default]
    if marked:
        return marked[0]
    return next((e for e in entries if e.embedded), None)


def _packaged_entries() -> list[WeightsEntry]:
    return list_entries(_PACKAGED_MANIFEST) if _PACKAGED_MANIFEST.is_file() else []


def wheel_weights() -> set[str]:
    """The packaged entries whose files a wheel of anyrestore carries: each model's preferred
    one (its default, else its first entry) and the default, where embedded.

    The older versions stay in the source tree (git) and come with a source checkout only, so
    that the wheel stays far below PyPI's 100 MB a file. pyproject.toml's package-data names
    the same files; tests/test_packaging.py checks that they agree.
    """
    return _wheel_names(_packaged_entries())


def _wheel_names(entries: list[WeightsEntry]) -> set[str]:
    first: dict[str, WeightsEntry] = {}
    for entry in sorted(entries, key=lambda e: not e.default):  # as entries_for_model
        first.setdefault(entry.model, entry)
    default = _default_of(entries)
    chosen = [*first.values(), *([default] if default is not None else [])]
    return {e.name for e in chosen if e.embedded}


def left_out_of_wheel(entry: WeightsEntry) -> bool:
    """Whether ``entry`` is one of the package's older versions that this installation lacks
    because it came from a wheel (``wheel_weights``): not damage, and no Hub copy to fetch.
    Only the packaged manifest's own entries qualify (same name, file and sha256)."""
    path = entry.embedded_path
    if path is None or entry.on_hub or path.is_file():
        return False
    entries = _packaged_entries()  # read once for both questions
    packaged = next((e for e in entries if e.name == entry.name), None)
    return (
        packaged is not None
        and packaged.sha256 == entry.sha256
        and packaged.embedded_path == path
        and path.parent == _PACKAGE_DIR / _EMBEDDED_FOLDER
        and entry.name not in _wheel_names(entries)
    )
