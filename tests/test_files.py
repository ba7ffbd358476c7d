"""Atomic writes land where a plain ``open(path, "w")`` would, links and pipes included."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from anyrestore import files
from anyrestore.errors import UsageError
from anyrestore.files import AtomicFile, atomic_path, atomic_write, list_images


def test_a_link_is_followed_and_its_target_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real.png"
    real.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(real.name)
    atomic_write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "real.png"]


def test_a_dangling_link_gets_its_target_made(tmp_path: Path) -> None:
    link = tmp_path / "link.png"
    link.symlink_to("sub/made.png")
    with atomic_path(link) as tmp:
        tmp.write_bytes(b"data")
    assert link.is_symlink() and (tmp_path / "sub" / "made.png").read_bytes() == b"data"


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        # O_NONBLOCK: a writer that replaced the FIFO instead of opening it cannot hang the test
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        deadline = time.monotonic() + 30
        chunks = []
        while time.monotonic() < deadline and b"".join(chunks) != b"abcdef":
            try:
                chunks.append(os.read(fd, 64))
            except BlockingIOError:
                time.sleep(0.01)
        os.close(fd)
        got.append(b"".join(chunks))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.1)  # the reader holds the FIFO open before the writer opens it
    out = AtomicFile(fifo)
    out.write(b"abc", memoryview(b"def"))
    out.commit()
    reader.join(timeout=40)
    assert got == [b"abcdef"]
    assert fifo.is_fifo() and list(tmp_path.iterdir()) == [fifo]


def test_a_device_is_written_into_not_replaced(tmp_path: Path) -> None:
    # A node of our own: a regression must not replace the system's /dev/null
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    atomic_write(null, b"discarded")
    assert null.is_char_device() and list(tmp_path.iterdir()) == [null]


def test_discarding_a_write_through_a_link_keeps_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real.png"
    real.write_bytes(b"old")
    (tmp_path / "link.png").symlink_to(real.name)
    out = AtomicFile(tmp_path / "link.png")
    out.write(b"new")
    out.discard()
    assert real.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "real.png"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_replaced_file_keeps_its_owner(tmp_path: Path) -> None:
    """`sudo anyrestore fix a.jpg --overwrite` must not hand the user's photo to root."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"old")
    os.chown(photo, 1234, 5678)
    atomic_write(photo, b"new")
    assert (photo.stat().st_uid, photo.stat().st_gid) == (1234, 5678)
    with atomic_path(photo) as tmp:
        tmp.write_bytes(b"newer")
    assert photo.read_bytes() == b"newer"
    assert (photo.stat().st_uid, photo.stat().st_gid) == (1234, 5678)
    fresh = tmp_path / "fresh.png"
    atomic_write(fresh, b"new")
    assert fresh.stat().st_uid == 0


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    private = tmp_path / "private.png"
    private.write_bytes(b"old")
    private.chmod(0o600)
    atomic_write(private, b"new")
    with atomic_path(private) as tmp:
        tmp.write_bytes(b"newer")
    assert private.read_bytes() == b"newer"
    assert private.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("how", ["atomic_write", "atomic_path"])
def test_an_atomic_write_reaches_the_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # A renamed but unsynced file (a checkpoint of days of training) can come back empty
    # after a power cut: the bytes are synced first, the folder's rename after.
    import anyrestore.files as files

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    path = tmp_path / "last.pt"
    if how == "atomic_write":
        atomic_write(path, b"state")
    else:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"state")
    assert path.read_bytes() == b"state"
    assert events == ["file", "rename", "dir"]


def test_list_images_follows_linked_folders_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.png").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(b"x")
    (root / "more").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # must not recurse forever
    found = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert found == ["a.png", "more/b.png"]


@pytest.mark.parametrize("pattern", [None, "*.png"])
def test_the_excluded_folder_is_left_out_under_another_spelling_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str | None
) -> None:
    """On a case-insensitive disk ``-o photos/RESTORED`` is ``photos/restored``: paths differ,
    the folder is one (file_key made case-blind here, as such a disk's inodes are)."""
    (tmp_path / "restored").mkdir()
    for name in ("a.png", "restored/a.png"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(files, "file_key", lambda p: os.path.realpath(p).lower())
    found = list_images(tmp_path, pattern=pattern, exclude=tmp_path / "RESTORED")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.png"]


@pytest.mark.parametrize("pattern", ["*.png", "more/*.png", "*"])
def test_list_images_with_a_pattern_finds_what_rglob_finds_and_follows_links(
    tmp_path: Path, pattern: str
) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "b.png").write_bytes(b"x")
    (outside / "deep" / "c.png").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "real" / "more").mkdir(parents=True)
    (root / "a.png").write_bytes(b"x")
    (root / "notes.txt").write_bytes(b"x")
    (root / "real" / "more" / "d.png").write_bytes(b"x")
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob(pattern) if p.is_file())
    (root / "more").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    found = [p.relative_to(root).as_posix() for p in list_images(root, pattern=pattern)]
    linked = {"*.png": ["more/b.png", "more/deep/c.png"], "more/*.png": ["more/b.png"]}
    linked["*"] = linked["*.png"]
    assert found == sorted(expected + linked[pattern])


def test_a_folder_in_the_way_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    with pytest.raises(UsageError, match="a folder of that name is in the way"):
        AtomicFile(tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_discarding_removes_the_folders_made_for_the_file(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    out = AtomicFile(tmp_path / "kept" / "new" / "deeper" / "x.png")
    assert (tmp_path / "kept" / "new" / "deeper").is_dir()
    out.discard()
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]
    done = AtomicFile(tmp_path / "kept" / "new" / "x.png")
    done.write(b"data")
    done.commit()
    done.discard()  # a late discard leaves a committed file and its folder alone
    assert (tmp_path / "kept" / "new" / "x.png").read_bytes() == b"data"


@pytest.mark.parametrize("stem", ["写" * 80, "a" * 250, "é" * 124])
def test_a_name_near_the_length_limit_is_written(tmp_path: Path, stem: str) -> None:
    # 244-254 bytes: legal names whose temporary, cut by characters, would pass 255 bytes.
    path = tmp_path / f"{stem}.png"
    assert 240 <= len(os.fsencode(path.name)) <= 255
    assert atomic_write(path, b"pixels") == path
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"more pixels")
    assert path.read_bytes() == b"more pixels"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_list_images_names_the_folders_it_cannot_read(
    tmp_path: Path, unreadable_folders: set[str]
) -> None:
    for rel in ("ok/a.png", "locked/b.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    blocked = unreadable_folders
    blocked.add(str(tmp_path / "locked"))
    for how in ({}, {"pattern": "*.png"}, {"pattern": "**/*.png"}, {"pattern": "*/b*.png"}):
        for recursive in (True, False):
            if not recursive and how.get("pattern") in (None, "*.png"):
                continue  # the folders below are not listed at all, so none is missed
            unreadable: list[OSError] = []
            found = list_images(tmp_path, recursive=recursive, unreadable=unreadable, **how)
            assert found == (
                [] if how.get("pattern") == "*/b*.png" else [tmp_path / "ok" / "a.png"]
            )
            assert [e.filename for e in unreadable] == [str(tmp_path / "locked")], (how, recursive)
    unreadable = []  # a pattern that does not reach the locked folder misses nothing in it
    list_images(tmp_path, recursive=False, pattern="ok/*.png", unreadable=unreadable)
    assert unreadable == []

    blocked.add(str(tmp_path))
    with pytest.raises(PermissionError):
        list_images(tmp_path)
    from anyrestore.data.imagefiles import list_images as list_training_images
    from anyrestore.errors import DataError

    with pytest.raises(DataError, match="cannot read .*: Permission denied"):
        list_training_images(tmp_path)


def test_a_read_only_file_is_not_replaced(tmp_path: Path) -> None:
    # A rename ignores the target's mode: a file made read-only to protect it was replaced
    # (and the new one kept 0444), where cp or a shell's > would have been refused.
    kept = tmp_path / "final.png"
    kept.write_bytes(b"the only copy")
    kept.chmod(0o444)
    with pytest.raises(UsageError, match="final.png: it is read-only"):
        atomic_write(kept, b"new")
    assert kept.read_bytes() == b"the only copy" and sorted(tmp_path.iterdir()) == [kept]
    link = tmp_path / "link.png"  # through a link, the target's mode is what counts
    link.symlink_to(kept)
    with pytest.raises(UsageError, match="read-only"):
        atomic_write(link, b"new")
    kept.chmod(0o644)
    atomic_write(link, b"new")
    assert kept.read_bytes() == b"new"


def test_a_terminal_is_not_written_into(tmp_path: Path) -> None:
    # `fix x.jpg -o /dev/tty` put PNG bytes on the screen. The terminal is a pseudo-terminal
    # of our own (a node copied elsewhere cannot be opened, and devpts takes no new files, so
    # a regression could only write into this one).
    master, slave = os.openpty()
    try:
        own = Path(os.ttyname(slave))
        with pytest.raises(UsageError, match=f"{own}: it is a terminal"):
            atomic_write(own, b"\x89PNG image bytes")
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):  # nothing reached the terminal
            os.read(master, 100)
    finally:
        os.close(master)
        os.close(slave)


def test_an_output_on_a_read_only_mount_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was told to "make it writable, or remove it", neither possible there, and each
    # later file of a batch failed the same way.
    from anyrestore.errors import OutputFull

    kept = tmp_path / "old.png"
    kept.write_bytes(b"earlier output")
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path: object) -> None:
            self._real = real(path)  # type: ignore[arg-type]
            self.f_flag = self._real.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", ReadOnly)
    with pytest.raises(OutputFull, match="old.png: read-only file system"):
        atomic_write(kept, b"new")
    assert kept.read_bytes() == b"earlier output"


class _Libavif:
    """PIL._avif as built against a libavif with the AV1 codecs named."""

    def __init__(self, decoders: tuple[str, ...], encoders: tuple[str, ...]) -> None:
        self.decoder_codec_available = decoders.__contains__
        self.encoder_codec_available = encoders.__contains__


@pytest.mark.parametrize(
    ("decoders", "encoders", "reads", "writes"),
    [
        (("dav1d",), ("aom",), True, True),  # Pillow's wheels
        (("dav1d",), (), True, False),  # a libavif built to decode only
        ((), (), False, False),
    ],
    ids=["wheel", "decode only", "no codec"],
)
def test_avif_reading_and_writing_follow_libavif_codecs(
    monkeypatch: pytest.MonkeyPatch,
    decoders: tuple[str, ...],
    encoders: tuple[str, ...],
    reads: bool,
    writes: bool,
) -> None:
    # A Pillow whose libavif only decodes passed the old check (its module loads) and failed
    # the write after the restore.
    monkeypatch.setitem(sys.modules, "PIL._avif", _Libavif(decoders, encoders))
    files._avif_codecs.cache_clear()
    try:
        assert (files.pillow_reads_avif(), files.pillow_writes_avif()) == (reads, writes)
    finally:
        files._avif_codecs.cache_clear()


@pytest.mark.parametrize("avif", [True, False], ids=["Pillow with AVIF", "without"])
def test_avif_photos_are_listed_where_pillow_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, avif: bool
) -> None:
    # Without AVIF in Pillow, a phone's folder with AVIF photos failed the batch file by
    # file, where it should pass them over with the formats it cannot read.
    monkeypatch.setattr(files, "pillow_reads_avif", lambda: avif)
    for name in ("IMG_1.avif", "IMG_2.jpg", "IMG_3.heic"):
        (tmp_path / name).write_bytes(b"")
    passed_over: list[Path] = []
    found = files.list_images(tmp_path, passed_over=passed_over)
    assert [p.name for p in found] == (["IMG_1.avif", "IMG_2.jpg"] if avif else ["IMG_2.jpg"])
    assert sorted(p.name for p in passed_over) == (
        ["IMG_3.heic"] if avif else ["IMG_1.avif", "IMG_3.heic"]
    )
    # A pattern matching them (--glob 'IMG_*') passes them over alike: each would fail
    passed_over.clear()
    found = files.list_images(tmp_path, pattern="IMG_*", passed_over=passed_over)
    assert [p.name for p in found] == (["IMG_1.avif", "IMG_2.jpg"] if avif else ["IMG_2.jpg"])
    assert "IMG_3.heic" in [p.name for p in passed_over]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_a_new_file_gets_what_open_would_give_it_without_touching_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading the umask means setting it: another thread creating a file meanwhile (an app
    # calling restore from a pool) would get 0666. New files take the system's own mode.
    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask called"))
        with AtomicFile(tmp_path / "a.png") as f:
            f.write(b"x")
            f.commit()
        with atomic_path(tmp_path / "b.safetensors") as tmp:
            tmp.write_bytes(b"y")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o640


def test_the_temporary_fits_a_file_system_with_short_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eCryptfs allows about 143 bytes: a name that fits must not fail at the temporary.
    real = os.pathconf
    monkeypatch.setattr(os, "pathconf", lambda p, n: 143 if n == "PC_NAME_MAX" else real(p, n))
    name = "é" * 65 + ".png"  # 134 bytes
    created = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        created.append(len(os.fsencode(Path(path).name)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    with atomic_path(tmp_path / name) as tmp:
        tmp.write_bytes(b"z")
    assert (tmp_path / name).read_bytes() == b"z"
    assert created and max(created) <= 143


def test_a_folder_that_can_be_listed_but_not_entered_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chmod -R 644 leaves folders readable (their names list) but not searchable: every
    # look at a file inside fails. That folder is reported once; the others are still found.
    for rel in ("ok/a.png", "noentry/b.png", "noentry/c.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    blocked = str(tmp_path / "noentry")

    def guard(real):
        def look(path, *args, **kwargs):
            if os.path.dirname(os.fspath(path)) == blocked:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path, *args, **kwargs)

        return look

    monkeypatch.setattr(os, "stat", guard(os.stat))
    monkeypatch.setattr(os, "lstat", guard(os.lstat))
    for how in ({}, {"pattern": "*.png"}):
        unreadable: list[OSError] = []
        found = list_images(tmp_path, unreadable=unreadable, **how)
        assert found == [tmp_path / "ok" / "a.png"], how
        assert [e.filename for e in unreadable] == [blocked], how


@pytest.mark.parametrize("pattern", [".", "./", "./.", ""])
def test_a_glob_that_names_no_file_is_a_usage_error(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(UsageError, match="glob pattern must be"):
        list_images(tmp_path, pattern=pattern)
    with pytest.raises(UsageError, match="glob pattern must be"):
        list_images(tmp_path, pattern=pattern, recursive=False)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_a_private_file_being_replaced_is_never_readable_by_others(tmp_path: Path) -> None:
    private = tmp_path / "diary.png"
    private.write_bytes(b"old")
    private.chmod(0o600)
    with AtomicFile(private) as f:
        assert f.tmp is not None and f.tmp.stat().st_mode & 0o077 == 0  # while it is written
        f.write(b"new")
        f.commit()
    assert private.stat().st_mode & 0o777 == 0o600


def test_temporaries_a_killed_writer_left_are_removed_but_not_a_newer_one(tmp_path: Path) -> None:
    import os

    from anyrestore.files import remove_stale_temps

    dest = tmp_path / "last.pt"
    dest.write_bytes(b"checkpoint")
    old = tmp_path / ".last.pt.0123abcd.tmp"
    new = tmp_path / ".last.pt.89abcdef.tmp"  # another writer, still at work
    other = tmp_path / ".other.pt.0123abcd.tmp"
    backup = tmp_path / ".last.pt.bak.0123abcd.tmp"  # last.pt.bak's temporary, not last.pt's
    users = tmp_path / ".last.pt.old.tmp"  # a file of the user's
    for path, age in ((old, 100), (new, -100), (other, 100), (backup, 100), (users, 100)):
        path.write_bytes(b"partial")
        written = dest.stat().st_mtime - age
        os.utime(path, (written, written))
    assert remove_stale_temps(dest) == [old]
    assert not old.exists() and new.exists() and other.exists() and dest.exists()
    assert backup.exists() and users.exists()


def test_a_stop_while_the_temporary_is_made_leaves_no_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyrestore import files

    def stopped(dest: Path) -> Path:
        raise KeyboardInterrupt  # Ctrl-C on a slow mount

    monkeypatch.setattr(files, "_make_temp", stopped)
    with pytest.raises(KeyboardInterrupt):
        files.AtomicFile(tmp_path / "a" / "b" / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_refuses_a_read_only_file_and_takes_back_its_folders(tmp_path: Path) -> None:
    # What checkpoints, embedded copies and bench images are written with: held to the same
    # rules as every output.
    from anyrestore.files import atomic_path

    kept = tmp_path / "last.pt"
    kept.write_bytes(b"the only copy")
    kept.chmod(0o444)
    with pytest.raises(UsageError, match="read-only"):
        with atomic_path(kept) as tmp:
            tmp.write_bytes(b"new")
    assert kept.read_bytes() == b"the only copy"
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "new" / "kind" / "x.png"):
            raise OSError("the writer failed")
    assert not (tmp_path / "new").exists()
