"""From a weights reference (None, a path, an entry name, a model name) to a loaded model.

Resolution order for a reference string: an existing path or anything that looks like a
file name -> that file; a manifest entry name; a registry model name -> its preferred
entry. Manifest files are sha256-checked before anything reads them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anyrestore.errors import UsageError, WeightsError
from anyrestore.models.base import RestorationModel
from anyrestore.weights import hub
from anyrestore.weights.checkpoint import load_checkpoint, metadata_list, read_metadata
from anyrestore.weights.convert import PICKLE_SUFFIXES
from anyrestore.weights.manifest import (
    FILE_SUFFIXES,
    WeightsEntry,
    default_entry,
    entries_for_model,
    find_entry,
    left_out_of_wheel,
    list_entries,
    manifest_is_packaged,
    manifest_path,
    wheel_weights,
)

__all__ = [
    "FileCheck",
    "LoadedWeights",
    "entry_for",
    "load_weights",
    "resolve_weights",
    "sha256_file",
    "verify_entries",
]

_NO_DEFAULT = (
    "no default weights are installed; name a manifest entry (see `anyrestore weights list`) "
    "or a path to a .safetensors checkpoint"
)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _looks_like_path(ref: str) -> bool:
    """A path by its spelling (a separator, a checkpoint suffix), or a bare word that exists
    here and names no manifest entry or model: ``anyir_t`` stays the model even where the
    current folder holds something called that (``./anyir_t`` is the local one)."""
    if os.sep in ref or "/" in ref or Path(ref).suffix.lower() in FILE_SUFFIXES:
        return True
    return os.path.exists(ref) and not _is_name(ref)


def _is_name(ref: str) -> bool:
    from anyrestore.models import list_models

    return find_entry(ref) is not None or bool(entries_for_model(ref)) or ref in list_models()


_URL_PREFIXES = ("hf:", "http://", "https://")


def _check_not_url(ref: str) -> None:
    if ref.lower().startswith(_URL_PREFIXES):
        raise WeightsError(
            f"{ref}: weights are not fetched from a URL directly; give a manifest entry "
            "name, or add an entry for the upload (anyrestore weights add FILE --repo-id "
            "REPO --revision COMMIT ...) so it is pinned and checksummed"
        )


def _training_run(path: Path) -> Path | None:
    """The run folder of ``anyrestore train`` that ``path`` is, or holds its checkpoint of."""
    folder = path if path.is_dir() else path.parent
    if (folder / "last.pt").is_file() and (folder / "config.toml").is_file():
        return folder
    return None


def _check_local(path: Path) -> Path:
    """``path`` as a weights file to load, or the WeightsError that says why not."""
    try:
        return _checked_local(path)
    except OSError as exc:  # a name too long for the system, a folder that cannot be read
        raise WeightsError(f"weights file {path}: {exc.strerror or exc}") from None


def _checked_local(path: Path) -> Path:
    run = _training_run(path) if path.suffix.lower() == ".pt" or path.is_dir() else None
    if run is not None:
        raise WeightsError(
            f"{path} is a training run's resume checkpoint, not inference weights; export "
            f"them first: anyrestore train export {run} -o WEIGHTS.safetensors"
        )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: anyrestore loads only .safetensors checkpoints and never unpickles "
            f"{path.suffix} files; convert it once with `anyrestore weights convert {path} "
            "--model VARIANT -o NEW.safetensors`"
        )
    if not path.is_file():
        there = path.is_dir()
        raise WeightsError(
            f"{path} is a folder, not a weights file"
            if there
            else f"weights file not found: {path}"
        )
    _check_listed(path)
    return path


def _own_file_names(entry: WeightsEntry) -> set[str]:
    """The file names that are ``entry``'s own: its embedded copy's, and its Hub file's where
    that is named after the entry (``org/x``'s ``model.safetensors`` is anyone's name: every
    export of a training run may be called that)."""
    names = {entry.embedded_path.name} if entry.embedded_path else set()
    if entry.filename:
        upload = PurePosixPath(entry.filename)  # a file in a folder of the repository: its name
        if upload.stem == entry.name:
            names.add(upload.name)
    return names


def _check_listed(path: Path) -> None:
    """A local file named like a manifest checkpoint must have that checkpoint's bytes (of
    one of them, where several entries own a file name)."""
    named = [entry for entry in list_entries() if path.name in _own_file_names(entry)]
    if not named:
        return
    size = path.stat().st_size
    digest = sha256_file(path) if any(e.size == size for e in named) else None
    if any(e.size == size and e.sha256 == digest for e in named):
        return
    entry = named[0]
    raise WeightsError(
        f"{path} is named like the manifest's weights {entry.name!r} but its bytes differ "
        f"(sha256 {entry.sha256[:12]}..., {entry.size} bytes expected); the file is damaged, "
        "or rename it if it is a checkpoint of your own"
    )


def entry_for(ref: str, *, paths_too: bool = True) -> WeightsEntry:
    """The manifest entry a name refers to: an entry name, or a model name's preferred entry.

    ``paths_too``: whether the caller also takes a file path, which the error then offers.
    """
    entry = find_entry(ref)
    if entry is not None:
        return entry
    by_model = entries_for_model(ref)
    if by_model:
        return by_model[0]
    from anyrestore.models import list_models

    if ref in list_models():
        instead = (
            "; give the path of a .safetensors checkpoint of it instead (e.g. from "
            "`anyrestore train`)"
            if paths_too
            else ""
        )
        raise WeightsError(f"no trained weights ship for the model variant {ref!r}{instead}")
    # Not the older versions an installed wheel lacks: loading one only says where it is.
    entries = [e for e in list_entries() if not left_out_of_wheel(e)]
    names = [e.name for e in entries]
    models = sorted({e.model for e in entries})
    known = (
        ", ".join(names + [m for m in models if m not in names]) or "none (the manifest is empty)"
    )
    also = "; or pass a path to a .safetensors file" if paths_too else ""
    raise WeightsError(f"unknown weights {ref!r}; known weights: {known}{also}")


def _inside_cache(path: Path) -> bool:
    return path.resolve().is_relative_to(hub.cache_dir().resolve())


def _check_entry_file(entry: WeightsEntry, path: Path, *, cached: bool) -> Path:
    """Size and sha256 of ``path`` against the manifest; a bad cached copy is deleted.

    A cached file that links outside the Hub cache is refused untouched: deleting or
    re-downloading through the link would damage a file that is not ours.
    """
    if cached and not _inside_cache(path):
        raise WeightsError(
            f"cached weights {entry.name!r} ({path}) link to {path.resolve()}, outside the Hub "
            f"cache {hub.cache_dir()}; refusing to use or delete it"
        )
    try:
        size = path.stat().st_size
        # A cached file is hashed even at the wrong size, to tell a damaged copy from the
        # server's own bytes (below).
        actual = sha256_file(path) if size == entry.size or cached else None
    except OSError as exc:
        kind = "cached" if cached else "embedded"
        raise WeightsError(
            f"cannot read the {kind} weights {entry.name!r} ({path}): {exc.strerror or exc}"
        ) from None
    if size == entry.size and actual == entry.sha256:
        return path
    same_size = size == entry.size
    found = f"sha256 {actual[:12]}..." if same_size and actual else f"size {size}"
    expected = f"sha256 {entry.sha256[:12]}..." if same_size else f"size {entry.size}"
    if cached:
        # The Hub cache names a large file's blob by its sha256 (blobs/<etag>, itself a link
        # into the cache-wide store of Xet files, blobs/xx/<xet hash>, where that is used): a
        # blob true to its name holds the server's bytes, received whole, so fetching them
        # again cannot help.
        served = actual is not None and actual in {p.name for p in _cache_links(path)}
        not_deleted = _remove_cached(path)
        if served:
            where = f"{entry.repo_id}/{entry.filename}@{(entry.revision or 'main')[:12]}"
            raise WeightsError(
                f"checksum mismatch for weights {entry.name!r}: expected {expected}, got "
                f"{found} from {hub.endpoint() or 'https://huggingface.co'} ({where}); "
                + ("deleted the download" if not_deleted is None else f"could not delete {path}")
                + ". The manifest entry or the server is wrong: running again will not help"
            )
        again = "run again online" if hub.is_offline() else "run again"
        raise WeightsError(
            f"checksum mismatch for weights {entry.name!r}: expected {expected}, got {found}; "
            + (
                f"deleted the bad cached file, {again} to re-download"
                if not_deleted is None
                else f"could not delete the bad cached file ({not_deleted}): delete {path} and "
                f"what it links to, then {again}"
            )
        )
    raise WeightsError(
        f"checksum mismatch for embedded weights {entry.name!r} ({path}): expected {expected}, "
        f"got {found}; {_embedded_advice()}"
    )


def _embedded_advice() -> str:
    """What to do about a missing or damaged embedded file: the package's own manifest is
    mended by reinstalling, a private one (ANYRESTORE_MANIFEST) by whoever keeps it."""
    if manifest_is_packaged():
        return "the installation is damaged, reinstall anyrestore"
    return f"restore the file, or fix its entry in {manifest_path()}"


def _cache_links(pointer: Path) -> list[Path]:
    """``pointer`` and each link it goes through to the bytes, the bytes' file last: the Hub
    cache links snapshots/<commit>/<file> to blobs/<etag>, which holds the bytes or links on
    to the shared store of Xet files (huggingface_hub 1.x and later)."""
    chain = [pointer]
    while chain[-1].is_symlink() and len(chain) < 40:  # 40: the system's own limit on hops
        target = Path(os.readlink(chain[-1]))
        chain.append(target if target.is_absolute() else chain[-1].parent / target)
    return chain


def _remove_cached(pointer: Path) -> str | None:
    """Delete a bad cached file: its snapshot link, its blob, and the bytes the blob links to
    (damaged for every repository that shares them). None, or why it could not be deleted
    (a read-only cache)."""
    chain = _cache_links(pointer)
    cache = hub.cache_dir().resolve()
    if not all((p.parent.resolve() / p.name).is_relative_to(cache) for p in chain):
        return "it links outside the Hub cache"  # never delete a file that is not ours
    try:
        for path in chain:
            path.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _resolve_entry(entry: WeightsEntry, *, offline: bool | None) -> Path:
    if entry.embedded_path is not None and entry.embedded_path.is_file():
        return _check_entry_file(entry, entry.embedded_path, cached=False)
    if left_out_of_wheel(entry):
        raise WeightsError(
            f"{entry.name!r} comes with a source checkout of anyrestore only: its wheel "
            f"carries each model's current weights ({', '.join(sorted(wheel_weights()))}); "
            "clone the repository and `pip install -e .` it for the older versions, or give "
            "such a file's path"
        )
    if not entry.on_hub:
        raise WeightsError(
            f"embedded weights {entry.name!r} are missing ({entry.embedded_path}); "
            f"{_embedded_advice()}"
        )
    return _check_entry_file(entry, hub.download(entry, offline=offline), cached=True)


def resolve_weights(
    ref: str | os.PathLike[str] | None = None, *, offline: bool | None = None
) -> Path:
    """A verified local file for ``ref`` (see the module docstring), downloading if needed."""
    if ref is None:
        entry = default_entry()
        if entry is None:
            raise WeightsError(_NO_DEFAULT)
        return _resolve_entry(entry, offline=offline)
    if isinstance(ref, os.PathLike):
        return _check_local(Path(ref))
    if not isinstance(ref, str) or not ref:
        raise WeightsError(f"invalid weights reference {ref!r}")
    _check_not_url(ref)
    if _looks_like_path(ref):
        return _check_local(Path(ref).expanduser())
    return _resolve_entry(entry_for(ref), offline=offline)


def resolve_entry(name: str, *, offline: bool | None = None) -> Path:
    """A verified local file for a manifest entry or model name (never a path), downloading
    if needed: what ``weights download`` fetches."""
    if _looks_like_path(name):
        raise UsageError(
            f"{name} is a file path; `weights download` fetches manifest entries by name "
            "(see `anyrestore weights list`), and a local file needs no download"
        )
    return _resolve_entry(entry_for(name, paths_too=False), offline=offline)


def weights_key(ref: str | os.PathLike[str] | None) -> str:
    """One string per checkpoint however it is named: the entry a name, variant or the
    default resolves to, or a file's real path. Nothing is loaded or downloaded."""
    if ref is None:
        entry = default_entry()
        return f"entry:{entry.name}" if entry is not None else "entry:"
    text = os.fspath(ref)
    if isinstance(ref, os.PathLike) or _looks_like_path(text):
        return f"file:{os.path.realpath(os.path.expanduser(text))}"
    return f"entry:{entry_for(text).name}"


@dataclass(frozen=True)
class LoadedWeights:
    """A checkpoint loaded by ``load_weights``: the model and what is known about it."""

    model: RestorationModel
    #: The verified local file the weights came from.
    path: Path
    #: The manifest entry, when the reference named one (or was the default).
    entry: WeightsEntry | None
    #: The registered variant whose architecture and config the model has exactly, if any.
    variant: str | None
    #: The variant the manifest entry or the file's metadata says it holds, if any.
    declared: str | None
    #: Degradations it was trained for (manifest entry, else the file's metadata).
    trained_for: tuple[str, ...]

    @property
    def name(self) -> str:
        """The variant to call it by: the matching one, the declared one, or the architecture."""
        return self.variant or self.declared or self.model.arch

    @property
    def pad_multiple(self) -> int:
        """The grid the model pads to inside, and the engine lays tiles on."""
        return int(getattr(self.model, "pad_multiple", 1)) or 1

    @property
    def tile_overlap(self) -> int:
        """The overlap in pixels the model wants between tiles when an image is tiled."""
        return int(getattr(self.model, "tile_overlap_hint", 32))


def load_weights(
    ref: str | os.PathLike[str] | None = None, *, offline: bool | None = None
) -> LoadedWeights:
    """Resolve ``ref`` and rebuild its model on CPU in eval mode, loaded with ``strict=True``.

    ``None`` is the default (embedded) checkpoint. Every failure is a WeightsError.
    """
    entry = None
    if ref is None:
        entry = default_entry()
    elif isinstance(ref, str) and not _looks_like_path(ref):
        entry = entry_for(ref)
    if entry is not None:
        _check_entry_model(entry)
    path = resolve_weights(ref, offline=offline)
    model = load_checkpoint(path, expect_arch=entry.arch if entry else None)
    if not isinstance(model, RestorationModel):
        raise WeightsError(f"{path} does not hold a restoration model")
    if entry is not None:
        declared, trained_for = entry.model, entry.trained_for
    else:
        meta = read_metadata(path)
        declared = meta.get("name")
        trained_for = tuple(metadata_list(meta.get("trained_for")))
    return LoadedWeights(model, path, entry, _variant_of(model), declared, trained_for)


def _check_entry_model(entry: WeightsEntry) -> None:
    """An entry's ``model`` must be a variant of its ``arch``: ``--model`` picks entries by
    it, and a hand-edited mismatch would run another network under the name asked for."""
    from anyrestore.models.registry import get_spec, list_models

    if entry.model in list_models() and get_spec(entry.model).arch != entry.arch:
        raise WeightsError(
            f"manifest entry {entry.name!r} says model {entry.model!r} but arch "
            f"{entry.arch!r} ({entry.model} is {get_spec(entry.model).arch}); fix the entry"
        )


def _variant_of(model: RestorationModel) -> str | None:
    from anyrestore.models.registry import find_variant

    return find_variant(model.arch, model.config)


@dataclass(frozen=True)
class FileCheck:
    """The outcome of re-hashing one stored file for ``weights verify``."""

    name: str
    source: str  # "embedded" or "cache"
    path: Path
    ok: bool
    detail: str
    #: The package lists the file but does not have it (an install without its weights).
    missing: bool = False


def verify_entries(names: list[str] | None = None) -> list[FileCheck]:
    """Re-hash every embedded and cached file of the manifest (or of ``names``); delete bad cached
    ones. An embedded file that is missing where the Hub has no copy fails as well: nothing
    could load those weights (but for the older versions a wheel leaves out: not damage)."""
    entries = list_entries() if not names else [entry_for(n, paths_too=False) for n in names]
    checks = []
    for entry in entries:
        stored = []
        if entry.embedded_path is not None and entry.embedded_path.is_file():
            stored.append(("embedded", entry.embedded_path))
        elif entry.embedded_path is not None and not entry.on_hub and not left_out_of_wheel(entry):
            detail = (
                f"embedded weights {entry.name!r} are missing ({entry.embedded_path}); "
                f"{_embedded_advice()}"
            )
            checks.append(
                FileCheck(entry.name, "embedded", entry.embedded_path, False, detail, True)
            )
        cached = hub.cached_file(entry)
        if cached is not None:
            stored.append(("cache", cached))
        for source, path in stored:
            try:
                _check_entry_file(entry, path, cached=source == "cache")
                checks.append(FileCheck(entry.name, source, path, True, "ok"))
            except WeightsError as exc:
                checks.append(FileCheck(entry.name, source, path, False, str(exc)))
    return checks
