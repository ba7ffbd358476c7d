"""``anyrestore batch``: bad files skipped, trees mirrored, skip-existing, sharding by RANK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import anyrestore.weights
from anyrestore.cli.app import app
from anyrestore.engine.imageio import avif_supported

H, W = 40, 56
runner = CliRunner()


def photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
        path
    )
    return path


def batch(*args: str | Path) -> object:
    return runner.invoke(app, ["batch", *map(str, args)])


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_a_corrupt_file_is_reported_and_the_rest_restored(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "a.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a PNG")
    photo(src / "c.jpg", seed=1)
    calls = []
    real_load = anyrestore.weights.load_weights
    monkeypatch.setattr(
        anyrestore.weights, "load_weights", lambda *a, **k: calls.append(a) or real_load(*a, **k)
    )
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    assert (out / "a.png").is_file() and (out / "c.jpg").is_file() and not (out / "b.png").exists()
    status = {Path(r["input"]).name: r["status"] for r in records(result.stdout)}
    assert status == {"a.png": "ok", "b.png": "failed", "c.jpg": "ok"}
    # An output is named only where one was written; a failed record says why instead.
    by_name = {Path(r["input"]).name: r for r in records(result.stdout)}
    assert "output" not in by_name["b.png"] and "corrupt PNG" in by_name["b.png"]["error"]
    assert by_name["a.png"]["output"] == str(out / "a.png") and by_name["a.png"]["tile"] == 0
    assert {r["weights"] for r in records(result.stdout)} == {str(tiny_checkpoint)}
    assert "failed b.png" in result.stderr
    assert "2 restored, 0 skipped, 1 failed" in result.stderr
    assert len(calls) == 1  # the model is loaded once per run


def test_json_paths_are_as_the_user_gave_the_folders(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo(tmp_path / "in" / "a.png")
    monkeypatch.chdir(tmp_path)
    result = batch("in", "-o", "out", "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    (record,) = records(result.stdout)
    assert (record["input"], record["output"]) == ("in/a.png", "out/a.png")


def test_strength_applies_to_every_file(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(["a.png", "b.png"]):
        photo(src / name, seed=i)
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, "--strength", "0", "--json")
    assert result.exit_code == 0, result.output
    assert {r["strength"] for r in records(result.stdout)} == {0.0}
    for name in ["a.png", "b.png"]:  # at strength 0 each photo comes back as it was
        assert np.array_equal(
            np.asarray(Image.open(out / name)), np.asarray(Image.open(src / name))
        )


def test_recursive_mirrors_the_tree_and_plain_runs_stay_flat(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = tmp_path / "in"
    photo(src / "top.png")
    photo(src / "sub" / "mid.png")
    photo(src / "sub" / "deeper" / "low.jpg")
    (src / "notes.txt").write_text("not an image, not selected")
    result = batch(src, "-o", tmp_path / "tree", "--weights", tiny_checkpoint, "--recursive")
    assert result.exit_code == 0, result.output
    made = sorted(
        p.relative_to(tmp_path / "tree").as_posix()
        for p in (tmp_path / "tree").rglob("*")
        if p.is_file()
    )
    assert made == ["sub/deeper/low.jpg", "sub/mid.png", "top.png"]
    result = batch(
        src, "-o", tmp_path / "flat", "--weights", tiny_checkpoint, "--suffix", "_r", "--ext", "png"
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["top_r.png"]


def test_a_rerun_works_whatever_the_folders_of_the_tree_are_called(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "probe" / "a.png")
    for _ in range(2):  # the second run finds the out/probe/ the first one made
        result = batch(src, "-o", out, "--weights", tiny_checkpoint, "-r", "--skip-existing")
        assert result.exit_code == 0, result.output
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == [
        "probe",
        "probe/a.png",
    ]


def test_a_folder_that_cannot_be_read_fails_and_the_rest_are_restored(
    tmp_path: Path, tiny_checkpoint: Path, unreadable_folders: set[str]
) -> None:
    src = tmp_path / "in"
    photo(src / "a.png")
    photo(src / "locked" / "b.png")
    blocked = unreadable_folders
    blocked.add(str((src / "locked").resolve()))
    result = batch(src, "-o", tmp_path / "out", "--weights", tiny_checkpoint, "-r", "--json")
    assert result.exit_code == 1, result.output
    status = [(r["input"], r["status"]) for r in records(result.stdout)]
    assert status == [(f"{src}/locked", "failed"), (str(src / "a.png"), "ok")]
    assert f"failed {src}/locked/: cannot read this folder: Permission denied" in result.stderr
    assert result.stderr.splitlines()[-1] == "anyrestore: error: 1 folder could not be read"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]

    blocked.add(str(src.resolve()))  # DIR itself: nothing to do, said at once
    for recursive in (["-r"], []):
        result = batch(src, "-o", tmp_path / "out2", "--weights", tiny_checkpoint, *recursive)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            f"anyrestore: error: cannot read {src}: Permission denied"
        ]


def test_output_folder_inside_the_input_is_not_read_back(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = tmp_path / "in"
    photo(src / "a.png")
    for _ in range(2):
        result = batch(src, "-o", src / "restored", "--weights", tiny_checkpoint, "-r", "--json")
        assert result.exit_code == 0, result.output
        assert [Path(r["input"]).name for r in records(result.stdout)] == ["a.png"]


@pytest.mark.parametrize("glob", [[], ["--glob", "*.png"]], ids=["photos", "glob"])
def test_an_output_folder_reached_through_a_link_in_the_input_is_not_read_back(
    tmp_path: Path, tiny_checkpoint: Path, glob: list[str]
) -> None:
    """``photos/restored`` a link to a folder on another disk: reruns must not restore the
    earlier outputs again one level deeper."""
    src, elsewhere = tmp_path / "in", tmp_path / "disk" / "restored"
    photo(src / "a.png")
    elsewhere.mkdir(parents=True)
    (src / "restored").symlink_to(elsewhere, target_is_directory=True)
    for _ in range(2):
        args = [src, "-o", src / "restored", "-w", tiny_checkpoint, "-r", "--json", *glob]
        result = batch(*args, "--skip-existing")
        assert result.exit_code == 0, result.output
        assert [Path(r["input"]).name for r in records(result.stdout)] == ["a.png"]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["a.png"]


def test_skip_existing_leaves_outputs_alone(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "a.png")
    photo(src / "b.png", seed=1)
    out.mkdir()
    (out / "a.png").write_bytes(b"earlier result")
    result = batch(
        src, "-o", out, "--weights", tiny_checkpoint, "--skip-existing", "--json", "--glob", "*.png"
    )
    assert result.exit_code == 0, result.output
    assert (out / "a.png").read_bytes() == b"earlier result"
    assert [r["status"] for r in records(result.stdout)] == ["skipped", "ok"]
    assert "1 restored, 1 skipped, 0 failed" in result.stderr


def test_formats_read_but_not_written_come_out_as_png(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = tmp_path / "in"
    Image.open(photo(src / "a.jpg")).save(src / "b.ppm")
    result = batch(src, "-o", tmp_path / "o", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "a.jpg").format == "JPEG"
    assert Image.open(tmp_path / "o" / "b.png").format == "PNG"


def test_a_clash_from_a_format_written_as_png_says_so(tmp_path: Path) -> None:
    src = tmp_path / "in"
    Image.open(photo(src / "a.png")).save(src / "a.ppm")
    result = batch(src, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "(a.ppm becomes PNG: anyrestore does not write PPM); rename one" in result.stderr


@pytest.mark.skipif(not avif_supported(), reason="this Pillow has no AVIF")
def test_a_phone_folder_of_avif_photos_is_restored_as_avif(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # AVIF files were passed over as a format anyrestore cannot read.
    src = tmp_path / "in"
    Image.open(photo(src / "a.jpg")).save(src / "IMG_2.avif")
    result = batch(src, "-o", tmp_path / "o", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "2 restored" in result.stderr and "passed over" not in result.stderr
    assert Image.open(tmp_path / "o" / "IMG_2.avif").format == "AVIF"


def test_avif_photos_become_png_where_pillow_cannot_write_avif(
    tmp_path: Path, tiny_checkpoint: Path, avif_read_only: None
) -> None:
    # A libavif built to decode only: the outputs were named .avif and failed after the work.
    src = tmp_path / "in"
    Image.open(photo(src / "a.jpg")).save(src / "IMG_2.avif")
    result = batch(src, "-o", tmp_path / "o", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "IMG_2.png").format == "PNG"
    Image.open(src / "a.jpg").save(src / "IMG_2.png")  # beside it, as exports are
    clash = batch(src, "-o", tmp_path / "p", "--weights", tiny_checkpoint)
    assert clash.exit_code == 2
    assert "(IMG_2.avif becomes PNG: this Pillow cannot write AVIF)" in clash.stderr


def test_usage_errors_are_exit_2(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "in"
    photo(src / "a.jpg")
    photo(src / "a.png")
    same = batch(src, "-o", src, "--weights", tiny_checkpoint)
    assert same.exit_code == 2 and "OUTDIR must differ from DIR" in same.stderr
    assert batch(tmp_path / "missing", "-o", tmp_path / "o").exit_code == 2
    clash = batch(src, "-o", tmp_path / "o", "--weights", tiny_checkpoint, "--ext", "png")
    assert clash.exit_code == 2 and "would both be written" in clash.stderr
    assert "no --format" in clash.stderr  # the advice that resolves it
    assert batch(src, "-o", tmp_path / "o", "--ext", "gif").exit_code == 2


def test_ranks_split_the_sorted_file_list(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    names = [f"img{i}.png" for i in range(5)]
    for i, name in enumerate(names):
        photo(src / name, seed=i)
    cmd = [
        sys.executable,
        "-m",
        "anyrestore",
        "batch",
        str(src),
        "-o",
        str(out),
        "--weights",
        str(tiny_checkpoint),
        "--json",
        "--quiet",
    ]
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_RANK": str(rank),
                "OMP_NUM_THREADS": "1",
            },
        )
        for rank in range(2)
    ]
    done = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, done, strict=True):
        assert proc.returncode == 0, err.decode()
    taken = [[Path(r["input"]).name for r in records(stdout.decode())] for stdout, _ in done]
    assert taken == [names[0::2], names[1::2]]
    assert sorted(p.name for p in out.iterdir()) == names


def test_a_link_to_nothing_is_reported_not_skipped(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "a.png")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    status = {Path(r["input"]).name: r["status"] for r in records(result.stdout)}
    assert status == {"a.png": "ok", "gone.png": "failed"}


@pytest.mark.parametrize(
    ("bad", "code"), [(["--tile", "-3"], 2), (["--weights", "no-such-weights"], 4)]
)
def test_bad_options_leave_no_empty_outdir(
    tmp_path: Path, tiny_checkpoint: Path, bad: list[str], code: int
) -> None:
    src, out = tmp_path / "in", tmp_path / "out" / "deeper"
    photo(src / "a.png")
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, *bad)
    assert result.exit_code == code, result.output  # a usage error; weights not found
    assert not (tmp_path / "out").exists()


def test_outputs_follow_links_but_never_into_an_input(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src, out, kept = tmp_path / "in", tmp_path / "out", tmp_path / "kept"
    photo(src / "a.png", seed=1)
    before = photo(src / "b.png", seed=2).read_bytes()
    photo(src / "c.png", seed=3)
    out.mkdir()
    kept.mkdir()
    (kept / "a.png").write_bytes(b"old")
    (out / "a.png").symlink_to(kept / "a.png")  # a link elsewhere: written through
    (out / "b.png").symlink_to(src / "b.png")  # a link to the input: refused
    (out / "c.png").symlink_to(kept / "a.png")  # onto a's output: never a second time
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    status = {Path(r["input"]).name: r["status"] for r in records(result.stdout)}
    assert status == {"a.png": "ok", "b.png": "failed", "c.png": "failed"}
    assert "links to an input" in result.output
    assert "is another output of this run" in result.output
    assert (out / "a.png").is_symlink() and Image.open(kept / "a.png").size == (W, H)
    solo = tmp_path / "solo"
    photo(solo / "a.png", seed=1)
    assert batch(solo, "-o", tmp_path / "alone", "--weights", tiny_checkpoint).exit_code == 0
    assert (kept / "a.png").read_bytes() == (tmp_path / "alone" / "a.png").read_bytes()
    assert (src / "b.png").read_bytes() == before


def test_quality_applies_to_every_jpeg(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "in"
    for i in range(2):
        photo(src / f"p{i}.png", seed=i)
    sizes = {}
    for quality in ("30", "95"):
        out = tmp_path / f"q{quality}"
        result = batch(
            src, "-o", out, "-f", "jpg", "--quality", quality, "--weights", tiny_checkpoint
        )
        assert result.exit_code == 0, result.output
        sizes[quality] = [p.stat().st_size for p in sorted(out.iterdir())]
    assert all(a < b for a, b in zip(sizes["30"], sizes["95"], strict=True))
    result = batch(src, "-o", tmp_path / "png", "--quality", "30", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("--quality has no effect on PNG") == 1


def test_an_empty_suffix_is_allowed_an_empty_outdir_is_not(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in"
    photo(src / "a.png")
    monkeypatch.chdir(tmp_path)
    result = batch(src, "-o", "", "--weights", tiny_checkpoint)
    assert result.exit_code == 2 and "-o has an empty value" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing in the current folder
    result = batch(src, "-o", tmp_path / "out", "--suffix", "", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_an_image_a_format_cannot_hold_fails_alone_before_restoring(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = tmp_path / "in"
    photo(src / "a.png")
    Image.new("RGB", (16384, 1)).save(src / "wide.png")
    result = batch(src, "-o", tmp_path / "o", "--weights", tiny_checkpoint, "--format", "webp")
    assert result.exit_code == 1, result.output
    assert "WEBP holds at most 16383 px a side" in result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.webp"]


@pytest.mark.parametrize(("fmt", "ext"), [("jpeg", ".jpg"), ("TIFF", ".tif"), (".jpg", ".jpg")])
def test_a_format_gets_the_extension_fix_gives_it(
    tmp_path: Path, tiny_checkpoint: Path, fmt: str, ext: str
) -> None:
    """--skip-existing and scripts find what either command wrote."""
    photo(tmp_path / "in" / "a.png")
    assert (
        batch(tmp_path / "in", "-o", tmp_path / "o", "-f", fmt, "-w", tiny_checkpoint).exit_code
        == 0
    )
    assert [p.name for p in (tmp_path / "o").iterdir()] == [f"a{ext}"]
    args = ["fix", tmp_path / "in" / "a.png", "-o", f"{tmp_path / 'f'}/", "-f", fmt, "-w"]
    one = runner.invoke(app, [*map(str, args), str(tiny_checkpoint)])
    assert one.exit_code == 0 and [p.name for p in (tmp_path / "f").iterdir()] == [f"a{ext}"]


def test_a_clash_only_renaming_resolves_is_not_told_to_change_the_format(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = tmp_path / "in"
    Image.open(photo(src / "x.png")).save(src / "x.ppm")  # both become x.png, with or without
    for extra in ([], ["--format", "png"]):
        clash = batch(src, "-o", tmp_path / "o", "--weights", tiny_checkpoint, *extra)
        assert clash.exit_code == 2 and "would both be written" in clash.stderr
        assert "rename one" in clash.stderr and "format" not in clash.stderr.split(";")[-1]


def test_an_output_that_is_an_input_is_refused_and_named_plainly(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "o"
    src = out / "sub"  # DIR inside OUTDIR: sub/sub/x.png would be written to sub/x.png
    before = photo(src / "x.png", seed=1).read_bytes()
    photo(src / "sub" / "x.png", seed=2)
    result = batch(src, "-o", out, "-r", "--weights", tiny_checkpoint)
    assert result.exit_code == 1, result.output
    assert "is an input; batch never writes over its inputs" in result.stderr
    assert (src / "x.png").read_bytes() == before and (out / "x.png").is_file()


def test_photos_it_cannot_read_are_counted_not_silently_passed_over(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # A phone's folder of HEIC photos gave "no images to restore" and nothing else; a camera
    # shooting RAW+JPEG puts a RAW file beside each JPEG, so they warn but do not fail the run.
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "a.jpg")
    for name in ("IMG_1.HEIC", "IMG_2.heic", "DSC_3.NEF", "notes.txt"):
        (src / name).write_bytes(b"\x00" * 64)
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    # --json consumers see every photo of the folder: those passed over as skipped, with why
    got = {Path(r["input"]).name: (r["status"], r.get("reason")) for r in records(result.stdout)}
    assert got == {
        "a.jpg": ("ok", None),
        "IMG_1.HEIC": ("skipped", "HEIC: a format anyrestore cannot read"),
        "IMG_2.heic": ("skipped", "HEIC: a format anyrestore cannot read"),
        "DSC_3.NEF": ("skipped", "camera RAW: a format anyrestore cannot read"),
    }
    assert (
        "passed over 3 files in formats anyrestore cannot read (2 HEIC, 1 camera RAW); "
        "convert them to TIFF, PNG or JPEG" in result.stderr
    )
    only_heic = tmp_path / "phone"
    (only_heic / "IMG_1.HEIC").parent.mkdir()
    (only_heic / "IMG_1.HEIC").write_bytes(b"\x00" * 64)
    result = batch(only_heic, "-o", out, "--weights", tiny_checkpoint)
    assert "passed over 1 file " in result.stderr and "no images to restore" in result.stderr
    assert "passed over" not in batch(only_heic, "-o", out, "-q").stderr


def test_a_loop_of_links_fails_alone(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # With OUTDIR inside DIR every file's real path was asked for, and a link to itself made
    # the whole run "internal error, please report it" with nothing restored.
    src = tmp_path / "in"
    photo(src / "a.png")
    (src / "loop.jpg").symlink_to("loop.jpg")
    result = batch(src, "-o", src / "out", "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    status = {Path(r["input"]).name: r["status"] for r in records(result.stdout)}
    assert status == {"a.png": "ok", "loop.jpg": "failed"}
    assert (src / "out" / "a.png").is_file() and "internal error" not in result.stderr
    (tmp_path / "ring").symlink_to("ring")  # OUTDIR itself a loop: a usage error
    result = batch(src, "-o", tmp_path / "ring", "--weights", tiny_checkpoint)
    assert result.exit_code == 2 and "internal error" not in result.stderr, result.stderr


def test_a_full_disk_stops_the_run_at_the_first_file(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The empty temporary is made even on a full disk, so the failure came only when the
    # restored image was written: every file was restored (minutes each) and then refused.
    import errno

    import anyrestore.engine
    import anyrestore.files

    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        photo(src / f"{i}.png", seed=i)
    restored = []
    real = anyrestore.engine.Restorer.restore_image
    monkeypatch.setattr(
        anyrestore.engine.Restorer,
        "restore_image",
        lambda self, *a, **k: restored.append(1) or real(self, *a, **k),
    )

    def full(self, chunks):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(anyrestore.files.AtomicFile, "_write", full)
    result = batch(src, "-o", out, "--weights", tiny_checkpoint)
    assert result.exit_code == 2, result.output
    assert len(restored) == 1 and "No space left on device" in result.stderr
    assert "stopped: 0 restored, 0 skipped, 1 failed, 2 not restored" in result.stderr
    assert not [p for p in out.rglob("*") if p.is_file()]  # no temporaries left either


def test_an_output_name_too_long_fails_that_file_before_its_work(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # It was an OSError out of --skip-existing's check (the whole run, exit 1) or, without
    # it, a failure only at the final rename, after the restore.
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "a.png")
    photo(src / ("b" * 240 + ".png"))
    for extra in ([], ["--skip-existing"]):
        result = batch(src, "-o", out, "--suffix", "_" * 20, "--weights", tiny_checkpoint, *extra)
        assert result.exit_code == 1, result.output
        assert "its name is 264 bytes, over the 255" in result.stderr
        assert (out / "a____________________.png").is_file()


def test_world_size_without_rank_is_refused(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 0 restored its quarter of the folder and the rest never, with exit 0.
    photo(tmp_path / "in" / "a.png")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    result = batch(tmp_path / "in", "-o", tmp_path / "out", "--weights", tiny_checkpoint)
    assert result.exit_code == 2 and "WORLD_SIZE=4 is set but RANK is not" in result.stderr
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: nothing to split
    assert batch(tmp_path / "in", "-o", tmp_path / "out", "-w", tiny_checkpoint).exit_code == 0


def test_the_file_that_stops_a_batch_gets_its_failed_record(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyrestore.engine
    from anyrestore.errors import DeviceError

    def oom(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise DeviceError("out of memory at the smallest tile")

    monkeypatch.setattr(anyrestore.engine.Restorer, "restore_image", oom)
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "b.png")
    result = batch(tmp_path / "in", "-o", tmp_path / "out", "-w", tiny_checkpoint, "--json")
    assert result.exit_code == 5
    assert [(Path(r["input"]).name, r["status"]) for r in records(result.stdout)] == [
        ("a.png", "failed")
    ]


def test_json_records_reach_stdout_while_the_bar_runs(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With stderr taken for a terminal (TTY_COMPATIBLE, as CI and Docker set it) the bar runs;
    # records piped to a file or jq must still arrive on stdout, not on the bar's stderr.
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "a.png")
    photo(src / "b.png", seed=1)
    result = batch(src, "-o", out, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    assert sorted(Path(r["input"]).name for r in records(result.stdout)) == ["a.png", "b.png"]
    assert '"status"' not in result.stderr


@pytest.mark.usefixtures("case_insensitive_disk")
def test_outdir_naming_dir_in_another_case_is_refused(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # On macOS, `batch ~/Pictures/Trip -o ~/pictures/trip` names the input folder itself:
    # with no suffix, every original would be replaced by its restoration.
    photo(tmp_path / "Trip" / "a.png")
    before = (tmp_path / "Trip" / "a.png").read_bytes()
    result = batch(tmp_path / "Trip", "-o", tmp_path / "trip", "--weights", tiny_checkpoint)
    assert result.exit_code == 2
    assert "OUTDIR must differ from DIR" in result.output
    assert (tmp_path / "Trip" / "a.png").read_bytes() == before
    # Inside it under another case: not read back as an input on the next run.
    photo(tmp_path / "Trip" / "b.png", seed=1)
    out = tmp_path / "Trip" / "restored"
    out.mkdir()
    result = batch(tmp_path / "Trip", "-o", tmp_path / "trip" / "restored", "-w", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    result = batch(
        tmp_path / "Trip", "-o", tmp_path / "trip" / "restored", "-w", tiny_checkpoint, "--json"
    )
    assert sorted(Path(r["input"]).name for r in records(result.stdout)) == ["a.png", "b.png"]
