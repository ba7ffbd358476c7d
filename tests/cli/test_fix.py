"""``anyrestore fix``: outputs, JSON, stdin/stdout, and every error path with its exit code."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from anyrestore.cli.app import app

H, W = 40, 56
runner = CliRunner()


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (W, H)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def fix(*args: str | Path) -> object:
    return runner.invoke(app, ["fix", *map(str, args)])


def one_line_error(result: object) -> str:
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("anyrestore: error: "), result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    return lines[0]


def test_default_output_is_written_next_to_the_input(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = photo(tmp_path / "holiday.jpg")
    result = fix(src, "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    out = tmp_path / "holiday_restored.jpg"
    assert result.stdout.strip() == str(out)
    assert Image.open(out).format == "JPEG" and Image.open(out).size == (W, H)
    assert "cpu fp32 channels-last" in result.stderr  # the compute path is always reported


def test_json_reports_what_was_done(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = photo(tmp_path / "in.png")
    out = tmp_path / "sub" / "out.webp"
    result = fix(
        src,
        "-o",
        out,
        "--weights",
        tiny_checkpoint,
        "--json",
        "--tile",
        "32",
        "--tile-overlap",
        "8",
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    # The compute path: precision, layout, threads and why (auto is fp32 without native bf16).
    assert record["compute"]["precision"] == "fp32" and record["compute"]["channels_last"]
    assert record["compute"]["threads"] == 1 and record["compute"]["reason"]
    assert {
        "input",
        "output",
        "model",
        "device",
        "precision",
        "tiles",
        "seconds",
        "width",
        "height",
    } <= set(record)
    assert (
        record["output"] == str(out) and record["device"] == "cpu" and record["precision"] == "fp32"
    )
    # Smaller than the side the model records its statistics on: one pass, whatever --tile says.
    assert (record["width"], record["height"]) == (W, H) and record["tiles"] == 1
    assert Image.open(out).format == "WEBP"
    assert record["weights"] == str(tiny_checkpoint)  # which checkpoint restored it


def test_strength_zero_writes_the_photo_back_and_is_reported(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = photo(tmp_path / "in.png")
    out = tmp_path / "out.png"
    result = fix(src, "-o", out, "--weights", tiny_checkpoint, "--strength", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["strength"] == 0.0 and "strength 0," in result.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(src)))
    full = tmp_path / "full.png"
    assert fix(src, "-o", full, "--weights", tiny_checkpoint).exit_code == 0
    assert not np.array_equal(np.asarray(Image.open(full)), np.asarray(Image.open(src)))
    for bad in ("1.5", "nan", "-0.1"):
        refused = fix(
            src, "-o", tmp_path / "x.png", "--weights", tiny_checkpoint, "--strength", bad
        )
        assert refused.exit_code == 2 and not (tmp_path / "x.png").exists()
        assert one_line_error(refused).endswith(
            f"--strength must be a number from 0 to 1, got {float(bad):g}"
        )


def test_json_names_the_default_weights_it_used(tmp_path: Path) -> None:
    from anyrestore.weights import default_entry

    result = fix(photo(tmp_path / "in.png"), "-o", tmp_path / "out.png", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["weights"] == default_entry().name and record["model"] == "anyir_t"
    assert f"({default_entry().name})" in result.stderr


def test_input_is_only_overwritten_with_overwrite(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = photo(tmp_path / "a.png")
    before = src.read_bytes()
    result = fix(src, "-o", src, "--weights", tiny_checkpoint)
    assert result.exit_code == 2
    assert "--overwrite" in one_line_error(result)
    assert src.read_bytes() == before
    result = fix(src, "-o", src, "--weights", tiny_checkpoint, "--overwrite")
    assert result.exit_code == 0 and src.read_bytes() != before
    existing = photo(tmp_path / "other.png", seed=1)  # other existing outputs are replaced
    old = existing.read_bytes()
    assert fix(src, "-o", existing, "--weights", tiny_checkpoint).exit_code == 0
    assert existing.read_bytes() != old
    with Image.open(src) as restored, Image.open(existing) as written:
        assert written.size == restored.size


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    result = fix(tmp_path / "nope.jpg")
    assert result.exit_code == 2
    assert "input not found" in one_line_error(result)


def test_unknown_option_is_said_once_after_the_usage_line(tmp_path: Path) -> None:
    result = fix(tmp_path / "a.jpg", "--bogus")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Usage: anyrestore fix")
    assert lines[-1].startswith("anyrestore: error: No such option: --bogus")
    assert result.stderr.count("--bogus") == 1  # not repeated in a box above the error line


def test_a_file_name_with_a_dash_is_told_to_go_after_double_dash() -> None:
    result = fix("-photo.jpg")
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error == (
        "anyrestore: error: No such option: -p (a file whose name starts with a dash: write "
        "./NAME, or put it after -- with every option before)"
    )


def test_a_misspelt_option_gets_the_options_it_may_mean_and_no_file_hint() -> None:
    result = fix("photo.jpg", "--qualty", "90")
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error == (
        "anyrestore: error: No such option: --qualty (Possible options: --quality, --quiet)"
    )


@pytest.mark.parametrize(
    "kind,message", [("truncated", "corrupt or truncated"), ("text", "not an image file")]
)
def test_corrupt_input_is_exit_3(
    tmp_path: Path, tiny_checkpoint: Path, kind: str, message: str
) -> None:
    bad = tmp_path / "bad.png"
    if kind == "truncated":
        good = photo(tmp_path / "good.png").read_bytes()
        bad.write_bytes(good[: len(good) // 2])
    else:
        bad.write_bytes(b"plain text")
    result = fix(bad, "--weights", tiny_checkpoint)
    assert result.exit_code == 3
    assert message in one_line_error(result)


def test_bomb_limit_is_exit_3(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = photo(tmp_path / "a.png")
    result = fix(src, "--weights", tiny_checkpoint, "--max-pixels", "1000")
    assert result.exit_code == 3 and "limit" in one_line_error(result)
    monkeypatch.setenv("ANYRESTORE_MAX_PIXELS", "1000")
    assert fix(src, "--weights", tiny_checkpoint).exit_code == 3


def test_unsupported_input_format_is_exit_3(tmp_path: Path, tiny_checkpoint: Path) -> None:
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (W, H)).save(gif)
    result = fix(gif, "--weights", tiny_checkpoint)
    assert result.exit_code == 3 and "unsupported image format GIF" in one_line_error(result)


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--device", "tpu"], 2, "unknown device"),
        (["--device", "cuda"], 5, "CUDA is not available"),
        (["--precision", "fp16", "--device", "cpu"], 2, "fp16 is not supported on the CPU"),
        (["-o", "out.gif"], 2, "unsupported output format"),
        (["--model", "anyir_s"], 2, "does not match"),
        (["--model", "no_such_model"], 2, "unknown model"),
        (["--tile", "-5"], 2, "tile size must be 0 (no tiling) or at least 32 px"),
        (["--tile", "5"], 2, "tile size must be 0 (no tiling) or at least 32 px, got 5"),
    ],
)
def test_bad_options_fail_with_their_exit_code(
    tmp_path: Path, tiny_checkpoint: Path, args: list[str], code: int, message: str
) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    src = photo(tmp_path / "a.png")
    result = runner.invoke(app, ["fix", str(src), "--weights", str(tiny_checkpoint), *args])
    assert result.exit_code == code, result.output
    assert message in one_line_error(result)


def test_an_unknown_runtime_from_the_environment_names_the_variable(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = photo(tmp_path / "a.png")
    args = ["fix", str(src), "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "b.png")]
    result = runner.invoke(app, args, env={"ANYRESTORE_RUNTIME": "openvno"})
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "unknown runtime 'ANYRESTORE_RUNTIME=openvno'; use one of auto" in line
    assert not (tmp_path / "b.png").exists()
    result = runner.invoke(app, args, env={"ANYRESTORE_RUNTIME": "Torch"})
    assert result.exit_code == 0, result.output


def test_unreadable_weights_are_exit_4(tmp_path: Path) -> None:
    src = photo(tmp_path / "a.png")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    result = fix(src, "--weights", broken)
    assert result.exit_code == 4
    one_line_error(result)


def test_stdin_to_stdout_in_a_subprocess(tmp_path: Path, tiny_checkpoint: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "anyrestore",
            "fix",
            "-",
            "-o",
            "-",
            "--weights",
            str(tiny_checkpoint),
        ],
        input=buf.getvalue(),
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = Image.open(io.BytesIO(proc.stdout))
    assert out.format == "PNG" and out.size == (W, H)  # PNG is stdout's default
    assert b"cpu fp32 channels-last" in proc.stderr or b"cpu bf16 channels-last" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_dev_fd_1_is_stdout_not_a_file_to_replace(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # /dev/fd/1 names stdout as /dev/stdout does; a regression here cannot replace /dev/stdout
    src = photo(tmp_path / "in.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "anyrestore", "fix", str(src), "-o", "/dev/fd/1"]
    proc = subprocess.run(
        [*args, "--weights", str(tiny_checkpoint)], capture_output=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = Image.open(io.BytesIO(proc.stdout))  # the image alone, no path printed after it
    out.load()
    assert out.format == "PNG" and out.size == (W, H)


def test_an_output_name_that_is_not_utf_8_is_printed_as_its_bytes(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # A file named under a Latin-1 locale, restored under a UTF-8 one with a strict stdout.
    src = photo(tmp_path / os.fsdecode(b"caf\xe9.png"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8:strict"}
    args = [sys.executable, "-m", "anyrestore", "fix", str(src), "--weights", str(tiny_checkpoint)]
    proc = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    out = tmp_path / os.fsdecode(b"caf\xe9_restored.png")
    assert proc.stdout == os.fsencode(out) + b"\n"
    assert Image.open(out).size == (W, H)


def test_a_fifo_output_gets_png_written_into_it(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src, fifo = photo(tmp_path / "in.png"), tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # never blocks the test
        chunks, seen, deadline = [], False, time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:  # no writer yet, or the writer is done
                if seen:
                    break
                time.sleep(0.01)
                continue
            seen = True
            chunks.append(chunk)
        os.close(fd)
        got.append(b"".join(chunks))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.1)
    result = fix(src, "-o", fifo, "--weights", tiny_checkpoint)
    reader.join(timeout=130)
    assert result.exit_code == 0, result.output
    image = Image.open(io.BytesIO(got[0]))
    assert image.format == "PNG" and image.size == (W, H)
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "pipe"]


def test_an_output_link_is_followed(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = photo(tmp_path / "in.png")
    (tmp_path / "kept").mkdir()
    real = tmp_path / "kept" / "real.png"
    real.write_bytes(b"old")
    link = tmp_path / "out.png"
    link.symlink_to(real)
    result = fix(src, "-o", link, "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert Image.open(real).size == (W, H)


def test_a_png_with_a_damaged_header_is_called_corrupt(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    data = bytearray(photo(tmp_path / "good.png").read_bytes())
    data[29] ^= 0xFF  # the IHDR chunk's checksum
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    result = fix(bad, "--weights", tiny_checkpoint)
    assert result.exit_code == 3
    assert "corrupt PNG" in one_line_error(result)


def test_an_animation_is_refused_and_extra_pages_are_warned_about(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    frames = [Image.new("RGB", (W, H), (80 * i, 0, 0)) for i in range(3)]
    anim = tmp_path / "anim.png"
    frames[0].save(anim, save_all=True, append_images=frames[1:])
    result = fix(anim, "-o", tmp_path / "a.png", "--weights", tiny_checkpoint)
    assert result.exit_code == 3 and "animation of 3 frames" in one_line_error(result)
    assert not (tmp_path / "a.png").exists()

    pages = tmp_path / "scan.tif"
    frames[0].save(pages, save_all=True, append_images=frames[1:])
    result = fix(pages, "-o", tmp_path / "p.tif", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "holds 3 pages; only the first is restored" in result.stderr
    assert (tmp_path / "p.tif").is_file()


def test_output_extension_and_format_must_agree(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = photo(tmp_path / "a.png")
    refused = fix(src, "-o", tmp_path / "y.png", "-f", "jpg", "--weights", tiny_checkpoint)
    assert refused.exit_code == 2 and "--format says JPEG" in one_line_error(refused)
    assert not (tmp_path / "y.png").exists()
    # An image format anyrestore does not write is no less misleading (PNG data in y.gif).
    for name, named in (("y.gif", "GIF"), ("y.ppm", "PPM")):
        refused = fix(src, "-o", tmp_path / name, "-f", "png", "--weights", tiny_checkpoint)
        assert refused.exit_code == 2, refused.output
        assert f"names {named} but --format says PNG" in one_line_error(refused)
        assert not (tmp_path / name).exists()
    agreed = fix(src, "-o", tmp_path / "y.jpeg", "-f", "jpg", "--weights", tiny_checkpoint)
    assert agreed.exit_code == 0, agreed.output
    assert Image.open(tmp_path / "y.jpeg").format == "JPEG"
    dib = fix(src, "-o", tmp_path / "y.dib", "-f", "bmp", "--weights", tiny_checkpoint)
    assert dib.exit_code == 0, dib.output  # a BMP by another name
    # An extension that names no image format leaves the choice to --format.
    free = fix(src, "-o", tmp_path / "y.data", "-f", "png", "--weights", tiny_checkpoint)
    assert free.exit_code == 0, free.output
    assert Image.open(tmp_path / "y.data").format == "PNG"


def test_json_records_look_alike_for_one_file_and_several(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    good = photo(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    one = fix(good, "--weights", tiny_checkpoint, "--json")
    assert one.exit_code == 0 and json.loads(one.stdout)["status"] == "ok"
    failed = fix(bad, "--weights", tiny_checkpoint, "--json")
    assert failed.exit_code == 3  # the code of the error, as without --json
    record = json.loads(failed.stdout)
    assert record["input"] == str(bad) and record["status"] == "failed"
    assert record["error"] in one_line_error(failed)
    several = fix(good, bad, "--weights", tiny_checkpoint, "--json")
    assert [json.loads(line)["status"] for line in several.stdout.splitlines()] == ["ok", "failed"]


def test_skip_existing_leaves_earlier_outputs_alone(tmp_path: Path, tiny_checkpoint: Path) -> None:
    a, b = photo(tmp_path / "a.png", seed=1), photo(tmp_path / "b.png", seed=2)
    done = tmp_path / "a_restored.png"
    done.write_bytes(b"an earlier result")
    result = fix(a, b, "--weights", tiny_checkpoint, "--skip-existing", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["input"], r["status"]) for r in records] == [(str(a), "skipped"), (str(b), "ok")]
    assert done.read_bytes() == b"an earlier result"
    assert Image.open(tmp_path / "b_restored.png").size == (W, H)
    assert "1 restored, 1 skipped, 0 failed" in result.stderr
    alone = fix(a, "--weights", tiny_checkpoint, "--skip-existing")
    assert alone.exit_code == 0 and alone.stdout == "" and "a_restored.png exists" in alone.stderr
    assert fix(a, "--weights", tiny_checkpoint).exit_code == 0  # without it, replaced
    assert Image.open(done).size == (W, H)
    # A rerun over *.png, whose earlier outputs are now inputs too: still skipped, not failed.
    rerun = fix(a, done, "--weights", tiny_checkpoint, "--skip-existing", "--json")
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout.splitlines()[0])["status"] == "skipped"


def test_output_folders_are_named_clearly(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = photo(tmp_path / "a.png")
    made = fix(src, "-o", f"{tmp_path / 'new'}/", "--weights", tiny_checkpoint)
    assert made.exit_code == 0, made.output
    assert (tmp_path / "new" / "a.png").is_file()  # a trailing slash: a folder, made
    (tmp_path / "afile").write_text("x")
    blocked = fix(src, "-o", tmp_path / "afile" / "x.png", "--weights", tiny_checkpoint)
    assert blocked.exit_code == 2
    assert "afile is a file, not a folder" in one_line_error(blocked)


def test_outputs_in_a_folder_take_the_format_asked_for(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    jpg = photo(tmp_path / "a.jpg", seed=1)
    out = tmp_path / "out"
    result = fix(jpg, "-o", f"{out}/", "--format", "png", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert Image.open(out / "a.png").format == "PNG" and not (out / "a.jpg").exists()
    # A format anyrestore reads but does not write (PPM), and a name without an extension,
    # come out as PNG and in the input's own format, as beside the input.
    Image.open(jpg).save(tmp_path / "p.ppm")
    (tmp_path / "bare").write_bytes(jpg.read_bytes())
    several = fix(tmp_path / "p.ppm", tmp_path / "bare", "-o", out, "--weights", tiny_checkpoint)
    assert several.exit_code == 0, several.output
    assert Image.open(out / "p.png").format == "PNG"
    assert Image.open(out / "bare.jpg").format == "JPEG"


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_allow_truncated_says_when_it_was_needed(
    tmp_path: Path, tiny_checkpoint: Path, suffix: str
) -> None:
    whole = photo(tmp_path / f"whole{suffix}")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    allowed = ["--weights", tiny_checkpoint, "--allow-truncated"]
    result = fix(cut, "-o", tmp_path / "c.png", *allowed)
    assert result.exit_code == 0, result.output
    assert f"cut{suffix} is truncated; restoring what is there" in result.stderr
    result = fix(whole, "-o", tmp_path / "w.png", *allowed)
    assert result.exit_code == 0 and "is truncated" not in result.stderr


def test_several_inputs_go_beside_themselves(tmp_path: Path, tiny_checkpoint: Path) -> None:
    a, b = photo(tmp_path / "a.png", seed=1), photo(tmp_path / "b.jpg", seed=2)
    result = fix(a, b, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["input"], r["status"]) for r in records] == [(str(a), "ok"), (str(b), "ok")]
    assert Image.open(tmp_path / "a_restored.png").size == (W, H)
    assert Image.open(tmp_path / "b_restored.jpg").format == "JPEG"


def test_a_failing_input_among_several_does_not_stop_the_others(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    a, c = photo(tmp_path / "a.png", seed=1), photo(tmp_path / "c.png", seed=3)
    (tmp_path / "b.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = fix(
        a,
        tmp_path / "b.png",
        tmp_path / "gone.png",
        c,
        "-o",
        f"{out}/",
        "--weights",
        tiny_checkpoint,
    )
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "2 restored, 2 failed" in result.output
    assert result.output.rstrip().splitlines()[-1] == "anyrestore: error: 2 of 4 files failed"
    assert "Traceback" not in result.output


def test_several_inputs_never_write_over_each_other(tmp_path: Path, tiny_checkpoint: Path) -> None:
    for folder in ("d1", "d2", "out"):
        (tmp_path / folder).mkdir()
    first, second = (
        photo(tmp_path / "d1" / "a.png", seed=1),
        photo(tmp_path / "d2" / "a.png", seed=2),
    )
    out = tmp_path / "out"
    result = fix(first, second, "-o", out, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    status = [(r["input"], r["status"]) for r in map(json.loads, result.stdout.splitlines())]
    assert status == [(str(first), "ok"), (str(second), "failed")]
    assert "another input or output of this run" in result.output
    assert [p.name for p in out.iterdir()] == ["a.png"]
    # --skip-existing does not take this run's own first output for an earlier result
    again = tmp_path / "again"
    args = ("-o", f"{again}/", "--weights", tiny_checkpoint, "--json", "--skip-existing")
    result = fix(first, second, *args)
    assert result.exit_code == 1, result.output
    status = [(r["input"], r["status"]) for r in map(json.loads, result.stdout.splitlines())]
    assert status == [(str(first), "ok"), (str(second), "failed")]

    # a's default output is the next input: that input is read, not replaced
    before = photo(tmp_path / "a_restored.png", seed=4).read_bytes()
    a = photo(tmp_path / "a.png", seed=1)
    result = fix(a, tmp_path / "a_restored.png", "--weights", tiny_checkpoint)
    assert result.exit_code == 1, result.output
    assert (tmp_path / "a_restored.png").read_bytes() == before
    assert (tmp_path / "a_restored_restored.png").exists()


@pytest.mark.parametrize("output", ["-", "one.png"])
def test_several_inputs_need_a_folder_for_output(
    tmp_path: Path, tiny_checkpoint: Path, output: str
) -> None:
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png")
    result = fix(
        a, b, "-o", tmp_path / output if output != "-" else "-", "--weights", tiny_checkpoint
    )
    assert result.exit_code == 2, result.output
    one_line_error(result)
    assert not (tmp_path / "one.png").exists()


@pytest.mark.parametrize("bad", [["--tile", "-3"], ["--device", "tpu"]])
def test_a_bad_option_stops_several_inputs_once(
    tmp_path: Path, tiny_checkpoint: Path, bad: list[str]
) -> None:
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png")
    result = fix(a, b, "--weights", tiny_checkpoint, *bad)
    assert result.exit_code == 2, result.output
    one_line_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_stdin_cannot_be_one_of_several(tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = fix(photo(tmp_path / "a.png"), "-", "--weights", tiny_checkpoint)
    assert result.exit_code == 2, result.output
    one_line_error(result)


def test_quality_sets_jpeg_size_and_warns_for_lossless(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = photo(tmp_path / "in.png", size=(160, 120))
    sizes = {}
    for quality in ("40", "95"):
        out = tmp_path / f"q{quality}.jpg"
        result = fix(src, "-o", out, "--quality", quality, "--weights", tiny_checkpoint)
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
        sizes[quality] = out.stat().st_size
    assert sizes["40"] < sizes["95"]
    result = fix(src, "-o", tmp_path / "out.png", "--quality", "40", "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "--quality has no effect on PNG" in result.stderr
    result = fix(src, "-o", tmp_path / "bad.jpg", "--quality", "0", "--weights", tiny_checkpoint)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "bad.jpg").exists()


def test_skip_existing_does_not_read_an_input_whose_output_is_there(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"damaged since")
    (tmp_path / "bad_restored.jpg").write_bytes(b"an earlier result")
    result = fix(bad, "--weights", tiny_checkpoint, "--skip-existing", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "skipped"


@pytest.mark.parametrize(
    ("args", "code"), [(["--tile", "5"], 2), (["--weights", "no-such-weights"], 4)]
)
def test_a_run_that_cannot_start_prints_no_record_and_leaves_no_folders(
    tmp_path: Path, tiny_checkpoint: Path, args: list[str], code: int
) -> None:
    src = photo(tmp_path / "a.png")
    weights = [] if "--weights" in args else ["--weights", str(tiny_checkpoint)]
    result = fix(src, "-o", tmp_path / "new" / "sub" / "x.png", "--json", *weights, *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""  # as with several inputs: the run failed, not the file
    one_line_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_folder_in_the_way_of_the_output_fails_before_restoring(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = photo(tmp_path / "a.png")
    (tmp_path / "a_restored.png").mkdir()
    result = fix(src, "--weights", tiny_checkpoint, "--json")
    assert result.exit_code == 2, result.output
    assert "a folder of that name is in the way" in one_line_error(result)
    assert [json.loads(line)["status"] for line in result.stdout.splitlines()] == ["failed"]
    assert "model " not in result.stderr  # refused before the model was loaded


def test_an_image_too_wide_for_jpeg_is_refused_before_restoring(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    src = photo(tmp_path / "long.png", size=(65501, 1))
    result = fix(src, "-o", tmp_path / "long.jpg", "--weights", tiny_checkpoint)
    assert result.exit_code == 2, result.output
    assert "JPEG holds at most 65500 px a side" in one_line_error(result)
    assert "model " not in result.stderr and not (tmp_path / "long.jpg").exists()


def test_an_output_name_too_long_is_refused_before_the_work(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # The temporary's name is cut to fit, so only the final rename found out, after the
    # restore (or, on Python 3.11, an OSError: exit 1, "File name too long" with no file).
    source = photo(tmp_path / ("b" * 250 + ".png"))
    result = fix(source, "--weights", tiny_checkpoint)
    assert result.exit_code == 2, result.output
    assert "its name is 263 bytes, over the 255 its folder allows" in one_line_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def _restores(monkeypatch: pytest.MonkeyPatch, fail_with: Exception | None = None) -> list[int]:
    """Count the restores (and make each raise ``fail_with``, when given)."""
    import anyrestore.engine

    calls: list[int] = []
    real = anyrestore.engine.Restorer.restore_image

    def restore(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if fail_with is not None:
            raise fail_with
        return real(self, *args, **kwargs)

    monkeypatch.setattr(anyrestore.engine.Restorer, "restore_image", restore)
    return calls


def test_the_file_that_stops_the_run_gets_its_failed_record(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NaN output (or out of memory, or a full disk) stops the run; the file it happened on
    # got no record at all, even alone, where the docs promise every IN its record.
    from anyrestore.errors import NonFiniteOutput

    calls = _restores(monkeypatch, NonFiniteOutput("the model returned NaN pixels"))
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png")
    alone = fix(a, "--weights", tiny_checkpoint, "--json")
    assert alone.exit_code == 4
    (record,) = [json.loads(line) for line in alone.stdout.splitlines()]
    assert record["status"] == "failed" and "NaN pixels" in record["error"]
    several = fix(a, b, "-o", f"{tmp_path}/out/", "--weights", tiny_checkpoint, "--json")
    assert several.exit_code == 4 and len(calls) == 2  # b is never tried
    assert "stopped: 0 restored, 1 failed, 1 not restored" in several.stderr
    records = [json.loads(line) for line in several.stdout.splitlines()]
    assert [(r["input"], r["status"]) for r in records] == [(str(a), "failed")]


def test_a_closed_stdout_stops_one_file_before_its_work(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The output's path is printed on stdout: with it closed, the restore ran for nothing.
    import anyrestore.cli.fix as fix_module
    from anyrestore.cli.errors import StdoutError

    def closed():  # type: ignore[no-untyped-def]
        raise StdoutError("stdout is closed; nothing can be printed")

    monkeypatch.setattr(fix_module, "stdout", closed)
    calls = _restores(monkeypatch)
    result = fix(photo(tmp_path / "a.png"), "--weights", tiny_checkpoint)
    assert result.exit_code == 2 and "stdout is closed" in result.stderr
    assert not calls and not (tmp_path / "a_restored.png").exists()


def test_endless_stdin_is_refused_at_what_an_image_could_take(tiny_checkpoint: Path) -> None:
    # `fix - < /dev/zero` read until memory ran out before the pixel limit was checked.
    endless = bytes(17 << 20)
    result = runner.invoke(
        app, ["fix", "-", "-o", "-", "--max-pixels", "1", "-w", str(tiny_checkpoint)], input=endless
    )
    assert result.exit_code == 3, result.output
    assert "<stdin>: more than 16 MB, over what one image within the pixel limit" in (result.stderr)
    assert "give the file by its path" in result.stderr


def test_a_skipped_stdin_is_drained_but_never_waited_on_nor_read_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `fix - --skip-existing` on a terminal waited for Ctrl-D; on /dev/zero it spun for ever.
    from anyrestore.cli.common import drain_stdin

    class Terminal:
        def isatty(self) -> bool:
            return True

        @property
        def buffer(self) -> object:
            raise AssertionError("a terminal was read")

    monkeypatch.setattr(sys, "stdin", Terminal())
    drain_stdin(1)

    class Endless:
        taken = 0

        def isatty(self) -> bool:
            return False

        @property
        def buffer(self) -> Endless:
            return self

        def read(self, size: int) -> bytes:
            self.taken += size
            return bytes(size)

    endless = Endless()
    monkeypatch.setattr(sys, "stdin", endless)
    drain_stdin(1)
    assert endless.taken == 8 + (16 << 20)  # what stdin_bytes would read, no more


def test_an_avif_without_pillow_support_is_an_input_error(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without AVIF in Pillow, the default output IMG_1_restored.avif was refused first, as if
    # the user had asked for AVIF: the input is what cannot be read, and what to convert it to.
    from anyrestore.engine.imageio import formats, reading

    monkeypatch.setattr(reading, "avif_supported", lambda: False)
    monkeypatch.delitem(formats.EXTENSIONS, ".avif", raising=False)  # as made without AVIF
    src = tmp_path / "IMG_1.avif"
    src.write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64))
    result = fix(src, "--weights", tiny_checkpoint)
    assert result.exit_code == 3
    assert "Pillow 11.3" in one_line_error(result) and "convert it to" in result.stderr


def test_an_avif_where_pillow_only_decodes_it_is_restored_to_png(
    tmp_path: Path, tiny_checkpoint: Path, avif_read_only: None
) -> None:
    # A libavif built to decode only: the default output was named .avif and the write failed
    # after the restore; asked for AVIF, it is refused before any work.
    src = tmp_path / "IMG_1.avif"
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(src, quality=90)
    result = fix(src, "--weights", tiny_checkpoint)
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "IMG_1_restored.png") as out:
        assert out.format == "PNG" and out.size == (W, H)
    result = fix(src, "-o", tmp_path / "out.avif", "--weights", tiny_checkpoint)
    assert result.exit_code == 2
    assert "cannot write AVIF: this Pillow's libavif has no AV1 encoder" in one_line_error(result)
    assert not (tmp_path / "out.avif").exists()


@pytest.mark.usefixtures("case_insensitive_disk")
def test_two_outputs_one_file_on_a_case_insensitive_disk_fail_the_second(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # a.png and A.jpg, both written as PNG into one folder: on macOS out/A.png is out/a.png,
    # and the second restoration would silently replace the first.
    photo(tmp_path / "a.png")
    photo(tmp_path / "A.jpg", seed=1)
    (tmp_path / "out").mkdir()
    result = fix(
        tmp_path / "a.png",
        tmp_path / "A.jpg",
        "-o",
        f"{tmp_path / 'out'}/",
        "--format",
        "png",
        "--weights",
        tiny_checkpoint,
    )
    assert result.exit_code == 1
    assert "is another input or output of this run" in result.output


def test_json_prints_no_record_for_options_no_file_could_satisfy(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # A run that cannot start prints only its error line (docs/inference.md): a script
    # reading records must not count the input as a file that failed.
    src = photo(tmp_path / "a.png")
    w = ("--weights", tiny_checkpoint)
    clash = fix(src, "-o", tmp_path / "y.png", "--format", "jpg", "--json", *w)
    assert clash.exit_code == 2 and clash.stdout == ""
    assert "names PNG but --format says JPEG" in clash.stderr
    piped = runner.invoke(app, ["fix", "-", "--json", *map(str, w)], input=src.read_bytes())
    assert piped.exit_code == 2 and piped.stdout == ""
    assert "stdin without -o" in piped.stderr


def test_stdin_redirected_from_the_output_is_not_overwritten_unasked(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `fix - -o photo.jpg < photo.jpg` reads the photo through stdin, then would replace it.
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(photo)
    before = photo.read_bytes()
    cmd = [sys.executable, "-m", "anyrestore", "fix", "-", "-o", str(photo)]
    with photo.open("rb") as stdin:
        proc = subprocess.run(
            [*cmd, "-w", str(tiny_checkpoint)], stdin=stdin, capture_output=True, timeout=300
        )
    assert proc.returncode == 2, proc.stderr.decode()
    assert b"refusing to overwrite the input (stdin reads" in proc.stderr
    assert photo.read_bytes() == before
    # Asked, it is replaced (stdin is a file here only as far as the check can tell).
    import anyrestore.cli.fix as fix_module
    from anyrestore.files import file_key

    monkeypatch.setattr(fix_module, "stdin_file_key", lambda: file_key(photo))
    refused = runner.invoke(
        app, ["fix", "-", "-o", str(photo), "-w", str(tiny_checkpoint)], input=before
    )
    assert refused.exit_code == 2 and photo.read_bytes() == before
    result = runner.invoke(
        app, ["fix", "-", "-o", str(photo), "--overwrite", "-w", str(tiny_checkpoint)], input=before
    )
    assert result.exit_code == 0, result.output
    assert photo.read_bytes() != before and Image.open(photo).size == (W, H)


@pytest.mark.parametrize("command", ["fix", "batch"])
def test_the_json_record_names_the_precision_that_gave_the_output(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # A first image of a new size runs eager fp32 on an OpenVINO bf16 path, and a pass redone
    # in fp32 after non-finite values: the record's precision is what ran, not the plan.
    import importlib

    from anyrestore.cli.common import compute_record

    module = importlib.import_module(f"anyrestore.cli.{command}")
    monkeypatch.setattr(
        module, "compute_record", lambda r: {**compute_record(r), "precision": "what ran"}
    )
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(src / "a.png")
    target = src / "a.png" if command == "fix" else src
    result = runner.invoke(
        app,
        [command, str(target), "-o", f"{tmp_path / 'out'}/", "--json", "-w", str(tiny_checkpoint)],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["precision"] == record["compute"]["precision"] == "what ran"
