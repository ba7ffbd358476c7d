"""Files on disk: which names are images, listing a folder of them, and atomic writes.

A leaf module (standard library only) so that the engine, weights, training, bench and data
code all list folders and replace files the same way.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import glob
import importlib
import itertools
import os
import secrets
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from anyrestore.errors import OutputFull, UsageError

#: Every image extension anyrestore reads, with the Pillow format it names.
IMAGE_EXTENSIONS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".avif": "AVIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".ppm": "PPM",
    ".pgm": "PPM",
}


#: Photo formats anyrestore cannot read, by extension, with the name a user knows them by:
#: ``batch`` counts the files it passes over and ``fix`` says to convert them, where both
#: would otherwise speak of "no images" or "not an image".
UNREADABLE_PHOTOS: dict[str, str] = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".jxl": "JPEG XL",
    **dict.fromkeys(
        (
            ".dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .raf .orf .rw2 .rwl .pef .srw .x3f "
            ".3fr .iiq .erf .kdc .mos .mrw"
        ).split(),
        "camera RAW",
    ),
}


#: libavif's names for the AV1 codecs it may be built with, by what each can do (not its
#: experimental AV2 one, "avm", which its automatic choice, Pillow's, never takes).
_AV1_DECODERS = ("dav1d", "libgav1", "aom")
_AV1_ENCODERS = ("aom", "rav1e", "svt")


@functools.cache
def _avif_codecs() -> tuple[bool, bool]:
    """Whether the installed Pillow's libavif has an AV1 decoder, and an encoder. Its AVIF
    module came in 11.2 (its wheels carry libavif from 11.3); a libavif built to decode only
    (some distributions ship one) reads AVIF and cannot write it. Imported by name, so that
    this module does not import Pillow itself."""
    try:
        avif = importlib.import_module("PIL._avif")
    except ImportError:
        return False, False
    return (
        any(avif.decoder_codec_available(name) for name in _AV1_DECODERS),
        any(avif.encoder_codec_available(name) for name in _AV1_ENCODERS),
    )


def pillow_reads_avif() -> bool:
    """Whether the installed Pillow reads AVIF (it has an AV1 decoder)."""
    return _avif_codecs()[0]


def pillow_writes_avif() -> bool:
    """Whether the installed Pillow writes AVIF (it has an AV1 encoder)."""
    return _avif_codecs()[1]


def unreadable_photos() -> dict[str, str]:
    """``UNREADABLE_PHOTOS``, and AVIF where this Pillow cannot read it."""
    return UNREADABLE_PHOTOS if pillow_reads_avif() else {**UNREADABLE_PHOTOS, ".avif": "AVIF"}


def unreadable_format(path: Path) -> str:
    """The format of a photo ``list_images`` passed over, as people name it ("HEIC")."""
    return unreadable_photos().get(path.suffix.lower(), path.suffix)


def unreadable_summary(paths: Sequence[Path]) -> str:
    """``paths`` that ``list_images`` passed over, counted by format: "3 files in formats
    anyrestore cannot read (2 HEIC, 1 AVIF)"."""
    kinds = Counter(unreadable_format(p) for p in paths)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    files = "file" if len(paths) == 1 else "files"
    return f"{len(paths)} {files} in formats anyrestore cannot read ({counts})"


#: What ``file_key`` gives: (device, inode), or a real path.
FileKey = tuple[int, int] | str


def file_key(path: str | os.PathLike[str]) -> FileKey:
    """One value per file, however it is named: (device, inode) where it exists, so that
    ``photo.JPG`` and ``photo.jpg`` on a case-insensitive disk (macOS, an SD card), a hard
    link and a link to it all compare equal; the real path of a name not there yet."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def is_image_file(path: Path) -> bool:
    """An image by its extension, and not hidden."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(
    root: Path,
    *,
    recursive: bool = True,
    pattern: str | None = None,
    exclude: Path | None = None,
    unreadable: list[OSError] | None = None,
    passed_over: list[Path] | None = None,
) -> list[Path]:
    """Regular image files under ``root``, sorted by their path relative to it.

    Hidden files and folders are skipped, and so is anything under ``exclude``. An
    unreadable ``root`` raises its OSError; a folder below it that cannot be read goes to
    ``unreadable`` (when given) for the caller to report, not silently passed over. With
    ``pattern`` (a relative glob, matched as ``Path.rglob`` would) every matching file
    counts, whatever its extension. A link to nothing is listed: reading it fails and is
    reported, not silently passed over. Photos in a format anyrestore cannot read
    (``unreadable_photos``), matched by a pattern or not, go to ``passed_over`` (when
    given), for the caller to name.
    Linked folders are followed (datasets are often assembled from links), each real folder
    once; a pattern containing ``**`` is left to ``rglob``, which does not follow them.
    """
    if pattern is not None:
        parts = Path(pattern).parts  # "." and "./" have none: nothing to match
        if not parts or Path(pattern).is_absolute() or ".." in parts:
            raise UsageError(f"glob pattern must be a non-empty relative pattern, got {pattern!r}")
    with os.scandir(root):  # an unreadable root fails here, whichever way it is listed
        pass
    errors = unreadable if unreadable is not None else []
    if pattern is not None:
        # pathlib's glob passes over folders it cannot read: they are looked for apart.
        if not recursive:
            candidates: Iterable[Path] = root.glob(pattern)
            _find_unreadable(root, errors, None if "**" in pattern else pattern)
        elif "**" in pattern:
            candidates = root.rglob(pattern)
            _find_unreadable(root, errors, None)
        else:  # rglob's matches (the pattern against the path's tail), through links too
            walked = _walk(root, errors, exclude)
            candidates = (p for p in walked if p.relative_to(root).match(pattern))
    else:
        candidates = _walk(root, errors, exclude) if recursive else root.iterdir()
    found = []
    cannot_read = unreadable_photos()
    for path in candidates:
        rel = path.relative_to(root)
        try:
            dangling = path.is_symlink() and not path.exists()
            is_file = path.is_file()
        except OSError as exc:  # a folder that can be listed but not entered (r without x)
            if not any(str(path.parent) == e.filename for e in errors):
                errors.append(OSError(exc.errno, exc.strerror, str(path.parent)))
            continue
        if any(part.startswith(".") for part in rel.parts) or not (is_file or dangling):
            continue
        # realpath, not resolve(): Python 3.11's resolve raises RuntimeError on a loop of links
        if exclude is not None and Path(os.path.realpath(path)).is_relative_to(exclude):
            continue
        suffix = path.suffix.lower()
        if suffix in cannot_read:  # matched by a pattern too: each would fail alike
            if passed_over is not None:
                passed_over.append(path)
            continue
        if pattern is None and suffix not in IMAGE_EXTENSIONS:
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _walk(root: Path, errors: list[OSError], exclude: Path | None = None) -> Iterator[Path]:
    """Every entry below ``root``, through linked folders too; a folder reached twice (a link
    loop, or two links to one place) is read once, and the folder ``exclude`` names is not
    entered however it is reached (a link, another case of its name on a case-insensitive
    disk). Folders that cannot be read go to ``errors``."""
    seen: set[str] = set()
    skip = file_key(exclude) if exclude is not None else None
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=errors.append):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if skip is not None:
            dirs[:] = [d for d in dirs if file_key(os.path.join(folder, d)) != skip]
        base = Path(folder)
        yield from (base / name for name in files)  # a link to nothing is among the files


def _find_unreadable(root: Path, errors: list[OSError], pattern: str | None) -> None:
    """Add to ``errors`` the folders below ``root`` that a glob would have to list but cannot:
    every one (``pattern`` None: a ``**`` pattern; not through links, as ``rglob``), or those
    whose names match the pattern's folder parts. Hidden folders are skipped anyway."""
    parts = Path(pattern).parts[:-1] if pattern is not None else None
    if parts == ():
        return  # only root itself, which list_images has opened already
    for folder, dirs, _ in os.walk(root, onerror=errors.append):
        level = len(Path(folder).relative_to(root).parts)
        if parts is not None and level >= len(parts):
            dirs[:] = []
            continue
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and (parts is None or fnmatch.fnmatchcase(d, parts[level]))
        ]


def _make_temp(dest: Path) -> Path:
    """A new hidden temporary beside ``dest``, made as ``open`` makes a file.

    Unlike ``mkstemp`` (always 0600) the system gives it 0666 less the umask, or what the
    folder's default ACL says, so a new output gets the permissions any program would give
    it, without reading the process-wide umask (``os.umask`` can only be read by setting
    it, which races with other threads creating files)."""
    prefix = _temp_prefix(dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:  # a file being replaced: no wider than it while the new bytes are written
        mode = os.stat(dest).st_mode & 0o666
    except OSError:
        mode = 0o666
    for _ in range(100):
        tmp = dest.parent / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, flags, mode))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(dest.parent))


def _keep_owner(tmp: Path, dest: Path) -> None:
    """Give ``tmp`` the owner and group of the file it replaces, where allowed.

    Writing in place keeps them; a rename would hand a file edited with ``sudo`` to root.
    Without the right to (an ordinary user replacing another's file in a shared folder) the
    new file stays the writer's, in the old group where the writer belongs to it.
    """
    try:
        old = os.stat(dest)
    except OSError:
        return
    new = os.stat(tmp)
    if (old.st_uid, old.st_gid) == (new.st_uid, new.st_gid):
        return
    try:
        os.chown(tmp, old.st_uid, old.st_gid)
    except OSError:
        with contextlib.suppress(OSError):
            os.chown(tmp, -1, old.st_gid)


def _put_in_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` over ``dest`` with the owner and permissions ``dest`` had (if any)."""
    _keep_owner(tmp, dest)  # before chmod: chown clears set-id bits
    with contextlib.suppress(FileNotFoundError):  # a new file keeps the mode it was made with
        os.chmod(tmp, os.stat(dest).st_mode & 0o7777)
    os.replace(tmp, dest)
    _sync_folder(dest.parent)


def _sync_file(path: Path) -> None:
    """Force ``path``'s bytes to disk: renamed unsynced, a file can come back empty after a
    power cut or a host reset (the rename reached the disk, the data not yet)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _sync_folder(folder: Path) -> None:
    """Force a rename in ``folder`` to disk, where the system allows syncing a folder."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no O_DIRECTORY
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _destination(path: Path) -> Path:
    """Where writing ``path`` lands: a link is followed to its target, as ``open`` would.

    Renaming a temporary over a link would replace the link itself and leave the file it
    points to as it was.
    """
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def is_stream(path: Path) -> bool:
    """A destination that cannot be replaced, only written into: a FIFO, a device, /dev/stdout."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


#: Errors of a file system that will refuse every later write too.
_FULL = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _write_error(path: Path, exc: OSError) -> UsageError:
    """The one-line error for an output that could not be written; :class:`OutputFull` where
    the file system takes nothing more, which stops a run of several files."""
    message = f"cannot write {path}: {exc.strerror or exc}"
    return OutputFull(message) if exc.errno in _FULL else UsageError(message)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_terminal(path: Path) -> bool:
    """Whether ``path`` is a terminal (opened without becoming the controlling one; a FIFO is
    never opened: that would wait for a reader)."""
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return False
        flags = getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0)  # POSIX only
        fd = os.open(path, os.O_WRONLY | flags)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _check_not_read_only(dest: Path) -> None:
    """Refuse to replace a file made read-only: a rename ignores its mode, where ``open``,
    ``cp`` or a shell's ``>`` would have been refused (root, which may write anything, is
    still held to a file no one may write)."""
    try:
        mode = os.stat(dest).st_mode
    except OSError:  # not there (or a file where a folder must be: said when it is made)
        return
    if not stat.S_ISREG(mode):
        return
    if _read_only_mount(dest.parent):  # no chmod mends that, and every later file fails too
        raise OutputFull(f"cannot write {dest}: read-only file system")
    if not mode & 0o222 or not os.access(dest, os.W_OK):
        raise UsageError(
            f"cannot write {dest}: it is read-only (make it writable, or remove it, to have it "
            "replaced)"
        )


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def _check_name_length(dest: Path) -> None:
    """Refuse a name longer than its file system allows, before the work: only the final
    rename would find out (the temporary's name is cut to fit)."""
    if os.name == "nt":  # NTFS counts UTF-16 units, not bytes; the rename says it there
        return
    folder = next((p for p in dest.parents if os.path.isdir(p)), Path("."))
    limit = _name_max(folder)
    size = len(os.fsencode(dest.name))
    if size > limit:
        raise UsageError(
            f"cannot write {dest}: its name is {size} bytes, over the {limit} its folder allows"
        )


def remove_stale_temps(dest: Path) -> list[Path]:
    """Remove the temporaries a killed writer left beside ``dest``, those older than it.

    A kill during a write leaves its hidden temporary (a training checkpoint's is about 100
    MB a time); one newer than ``dest`` may be another writer's, still at work, and stays.
    """
    try:
        written = dest.stat().st_mtime
    except OSError:
        return []
    removed = []
    # Exactly the temporaries _make_temp names: ``.last.pt.bak.<8>.tmp`` is another file's
    ours = f"{glob.escape(_temp_prefix(dest))}{'[0-9a-f]' * 8}.tmp"
    for tmp in dest.parent.glob(ours):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < written:
                tmp.unlink()
                removed.append(tmp)
    return removed


def _temp_prefix(dest: Path) -> str:
    """``.<name>.`` for a temporary beside ``dest``, the name cut (whole characters) so that
    with the 8 random characters and ``.tmp`` it stays within the longest name the folder
    allows (255 bytes on most file systems, about 143 on eCryptfs), however long or
    non-ASCII the target's own name is."""
    name = os.fsencode(dest.name)[: _name_max(dest.parent) - 14].decode("utf-8", errors="ignore")
    return f".{name}."


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX") or 255
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), an odd file system
        return 255


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that are not there yet, innermost first: what
    making it creates, and what ``remove_empty`` takes away again if nothing lands in them."""
    return list(itertools.takewhile(lambda p: not os.path.lexists(p), (folder, *folder.parents)))


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (innermost first) that is still empty; leave the rest."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


class AtomicFile:
    """A file replaced in one step: a hidden temporary beside the target, renamed on commit.

    The temporary is created on construction, so an unwritable destination fails before any
    work is done; ``discard`` (or any exception inside ``with``) removes it, and the folders
    made for it while they are still empty. A link is
    followed and its target replaced. A FIFO or device (``-o /dev/stdout``) cannot be
    replaced: it is written directly, and only then.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tmp: Path | None = None
        self.made: list[Path] = []  # folders made for the file, innermost first
        if is_stream(self.path):
            if not os.access(self.path, os.W_OK):
                raise UsageError(f"cannot write {self.path}: permission denied")
            if _is_terminal(self.path):  # -o /dev/tty, or /dev/stderr on a terminal
                raise UsageError(
                    f"refusing to write {self.path}: it is a terminal (name a file, or redirect)"
                )
            return
        try:  # each of these fails otherwise only at the end, after all the work
            _check_name_length(self.path)  # first: a name too long cannot even be looked at
            dest = _destination(self.path)
            if dest.is_dir():
                raise UsageError(f"cannot write {self.path}: a folder of that name is in the way")
            _check_not_read_only(dest)
            self.made = missing_folders(dest.parent)
        except OSError as exc:  # a folder on the way that cannot be entered, a loop of links
            raise _write_error(self.path, exc) from None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = _make_temp(dest)
        except OSError as exc:
            # mkdir says "File exists" when a file stands where a folder must be: name it
            blocker = next((p for p in dest.parents if _is_file(p)), None)
            self.discard()
            if blocker:
                message = f"cannot write {self.path}: {blocker} is a file, not a folder"
                raise UsageError(message) from None
            raise _write_error(self.path, exc) from None
        except BaseException:  # a stop signal: the folders made for the file go too
            self.discard()
            raise
        self.dest = dest

    def write(self, *chunks: bytes | memoryview) -> None:
        """Write ``chunks`` one after another (no joined copy) and sync them to disk."""
        self._guard(lambda: self._write(chunks))

    def _write(self, chunks: tuple[bytes | memoryview, ...]) -> None:
        with open(self.path if self.tmp is None else self.tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            if self.tmp is not None:  # a pipe or a terminal cannot be synced
                os.fsync(f.fileno())

    def commit(self) -> Path:
        """Give the temporary the target's name, and the permissions and owner a plain
        ``open`` would leave: the replaced file's, else the umask's and the writer's."""

        def rename() -> None:
            if self.tmp is not None:
                _put_in_place(self.tmp, self.dest)

        self._guard(rename)
        self.made = []  # they hold the file now
        return self.path

    def discard(self) -> None:
        """Remove the temporary and the folders made for it; nothing once committed (the
        temporary has been renamed and the folders hold the file)."""
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
        remove_empty(self.made)
        self.made = []

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            raise

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            self.discard()


def atomic_write(path: str | os.PathLike[str], *chunks: bytes | memoryview) -> Path:
    """Write ``chunks`` to a temporary beside ``path``, then rename it into place."""
    with AtomicFile(path) as out:
        out.write(*chunks)
        return out.commit()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path for writers that want a file name (torch.save, save_file, Pillow).

    On a clean exit the temporary replaces ``path``; on any exception it is removed and the
    exception goes on unchanged (writers' own errors are theirs to report).
    """
    if is_stream(Path(path)):  # nothing to replace: the writer writes into it
        yield Path(path)
        return
    target = _destination(Path(path))
    _check_not_read_only(target)  # as AtomicFile: a read-only file is not replaced
    made = missing_folders(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _make_temp(target)
    except BaseException:
        remove_empty(made)
        raise
    try:
        yield tmp
        _sync_file(tmp)
        _put_in_place(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_empty(made)  # the folders made for it, if nothing else was put there
        raise
