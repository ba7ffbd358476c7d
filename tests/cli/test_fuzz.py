"""Hostile inputs against ``fix`` and ``batch``: generated cases, each held to the same promises.

Every case asserts the documented exit code, no traceback, a failure ending in exactly one
``anyrestore: error:`` line, no file left behind when it fails, and nothing outside the
output touched when it succeeds. Most cases run in-process through Typer's CliRunner; the few
that need a real process (signals, a full or closed stdout) run as subprocesses. The totals
are printed at the end of the run (``-s`` or the terminal summary).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants  # noqa: F401 - see below
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from anyrestore.cli.app import app
from anyrestore.errors import ExitCode

# huggingface_hub reads HF_HUB_OFFLINE once, at import: imported here, with the environment
# clean, so the offline case below does not turn every later test in the session offline.

TOTALS: Counter[str] = Counter()
RNG_SEED = 28
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _report_totals(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = (
        f"fuzz totals: {TOTALS['cases']} cases, {TOTALS['tracebacks']} tracebacks, "
        f"{TOTALS['wrong_exit']} wrong exit codes, {TOTALS['bad_stderr']} bad error lines, "
        f"{TOTALS['files_left']} files left or damaged, {TOTALS['files_missing']} missing"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)
    out = os.environ.get("ANYRESTORE_FUZZ_TOTALS")
    if out:  # under pytest-xdist each worker counts its own share: one file each (OUT.gw0, ...)
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        Path(f"{out}.{worker}" if worker else out).write_text(json.dumps(dict(TOTALS)))


# -- the promises -------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with a digest of its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(root).as_posix()] = hashlib.sha1(path.read_bytes()).hexdigest()
        elif path.is_symlink():
            found[path.relative_to(root).as_posix()] = "link->" + os.readlink(path)
    return found


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def check(
    outcome: Outcome,
    expected: set[int],
    before: dict[str, str],
    after: dict[str, str],
    *,
    outputs: set[str] = frozenset(),  # type: ignore[assignment]
    usage: bool = False,
) -> None:
    """Assert the promises, counting each kind of breach before failing on it.

    ``outputs`` are the files a success (or a batch's partial success) must write, and the
    only ones it may create."""
    TOTALS["cases"] += 1
    text = outcome.stdout + outcome.stderr
    if "Traceback" in text or "Fatal Python error" in text:
        TOTALS["tracebacks"] += 1
        pytest.fail(f"traceback:\n{outcome.stderr}")
    if outcome.code not in expected:
        TOTALS["wrong_exit"] += 1
        pytest.fail(f"exit {outcome.code}, expected {sorted(expected)}:\n{outcome.stderr}")
    lines = outcome.stderr.rstrip("\n").splitlines()
    errors = [line for line in lines if line.startswith("anyrestore: error:")]
    if outcome.code != 0:
        ok = bool(lines) and lines[-1].startswith("anyrestore: error: ") and len(errors) == 1
        if not usage:  # with --quiet the error line is all there is
            ok = ok and len(lines) == 1
        if not ok:
            TOTALS["bad_stderr"] += 1
            pytest.fail(f"stderr is not one final error line:\n{outcome.stderr}")
    elif errors:
        TOTALS["bad_stderr"] += 1
        pytest.fail(f"error line on success:\n{outcome.stderr}")
    allowed = {k: v for k, v in after.items() if k not in before and k in outputs}
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    if outcome.code not in (ExitCode.OK, ExitCode.FAILED):  # batch: the good files are written
        allowed = {}
    elif missing := sorted(set(outputs) - set(after)):
        TOTALS["files_missing"] += 1
        pytest.fail(f"exit {outcome.code} without writing {missing}")
    if changed - set(allowed):
        TOTALS["files_left"] += 1
        pytest.fail(f"files created, changed or removed: {sorted(changed - set(allowed))}")


def invoke(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    result = runner.invoke(app, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"exception escaped the CLI: {result.exception!r}")
    return Outcome(result.exit_code, result.stdout, result.stderr)


# -- material -----------------------------------------------------------------------------

H, W = 20, 28


def pixels(channels: int, seed: int = 0) -> np.ndarray:
    shape = (H, W) if channels == 1 else (H, W, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    image = Image.fromarray(pixels(3)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


def png(w: int, h: int, rows: bytes, *, depth: int = 8, color: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def tiff(tags: list[tuple[int, int, list[int]]], data: bytes) -> bytes:
    """A little-endian TIFF with ``data`` right after the header and one IFD after it."""
    ifd_at = 8 + len(data) + (len(data) & 1)
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    ifd, extra = struct.pack("<H", len(tags)), b""
    for code, kind, values in sorted(tags):
        value = struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        if len(value) <= 4:
            ifd += struct.pack("<HHI", code, kind, len(values)) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", code, kind, len(values), extra_at + len(extra))
            extra += value
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + data + b"\0" * (len(data) & 1) + ifd + extra


def bomb(fmt: str) -> bytes:
    """A header declaring 200000 x 200000 pixels with (almost) no data behind it."""
    side = 200_000
    if fmt == "PNG":
        return png(side, side, b"\0" * 16)
    if fmt == "TIFF":
        tags = [(256, 4, [side]), (257, 4, [side]), (258, 3, [8]), (259, 3, [1])]
        tags += [(262, 3, [1]), (273, 4, [8]), (277, 3, [1]), (278, 4, [side]), (279, 4, [64])]
        return tiff(tags, b"\0" * 64)
    if fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\0" * 64
    if fmt == "JPEG":
        data = bytearray(encoded("JPEG"))
        at = data.index(b"\xff\xc0") + 5  # SOF0: precision, then height and width
        data[at : at + 4] = struct.pack(">HH", 65000, 65000)
        return bytes(data)
    if fmt == "WEBP":  # a real lossless file whose VP8L header says 16384 x 16384
        buf = io.BytesIO()
        Image.fromarray(pixels(3)).save(buf, format="WEBP", lossless=True)
        data = bytearray(buf.getvalue())
        at = data.index(b"VP8L") + 9  # chunk size, then the 0x2f signature
        bits = struct.unpack("<I", data[at : at + 4])[0] & ~((1 << 28) - 1)
        data[at : at + 4] = struct.pack("<I", bits | 16383 | (16383 << 14))
        return bytes(data)
    raise ValueError(fmt)


# -- generated cases: images ---------------------------------------------------------------


def _truncation_cases() -> list[tuple[str, float]]:
    return [(fmt, share) for fmt in FORMAT_EXT for share in (0.15, 0.3, 0.45, 0.6, 0.75, 0.85)]


@pytest.mark.parametrize("fmt,share", _truncation_cases(), ids=lambda v: str(v))
def test_truncated_image_is_exit_3(tmp_path: Path, tiny_checkpoint: Path, fmt: str, share: float):
    data = encoded(fmt)
    src = tmp_path / f"cut{FORMAT_EXT[fmt]}"
    src.write_bytes(data[: int(len(data) * share)])
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(tiny_checkpoint)])
    check(outcome, {ExitCode.INPUT}, before, snapshot(tmp_path))


def test_png_with_half_its_rows_is_exit_3_unless_allowed(tmp_path: Path, tiny_checkpoint: Path):
    rows = b"".join(b"\0" + pixels(3, seed=1)[y].tobytes() for y in range(H // 2))
    src = tmp_path / "half.png"
    src.write_bytes(png(W, H, rows))
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(tiny_checkpoint)])
    check(outcome, {ExitCode.INPUT}, before, snapshot(tmp_path))
    assert "truncated" in outcome.stderr and "50%" in outcome.stderr
    allowed = ["fix", str(src), "-q", "--weights", str(tiny_checkpoint), "--allow-truncated"]
    outcome = invoke(allowed)
    check(outcome, {ExitCode.OK}, before, snapshot(tmp_path), outputs={"half_restored.png"})


def _flip_cases() -> list[tuple[str, int]]:
    rng = np.random.default_rng(RNG_SEED)
    return [(fmt, int(i)) for fmt in FORMAT_EXT for i in rng.integers(0, 10_000, 8)]


@pytest.mark.parametrize("fmt,seed", _flip_cases(), ids=lambda v: str(v))
def test_flipped_bytes_are_restored_or_refused(
    tmp_path: Path, tiny_checkpoint: Path, fmt: str, seed: int
):
    data = bytearray(encoded(fmt))
    rng = np.random.default_rng(seed)
    for at in rng.integers(0, min(len(data), 200), 3):  # the headers, where it hurts
        data[int(at)] ^= 1 << int(rng.integers(0, 8))
    src = tmp_path / f"flip{FORMAT_EXT[fmt]}"
    src.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    args = ["fix", str(src), "-q", "--weights", str(tiny_checkpoint), "--max-pixels", "20000"]
    outcome = invoke(args)
    check(
        outcome,
        {ExitCode.OK, ExitCode.INPUT},
        before,
        snapshot(tmp_path),
        outputs={f"flip_restored{FORMAT_EXT[fmt]}"},
    )


@pytest.mark.parametrize("fmt", list(FORMAT_EXT))
@pytest.mark.parametrize("way", ["declared", "flag"])
def test_pixel_limit_is_checked_on_the_declared_size(
    tmp_path: Path, tiny_checkpoint: Path, fmt: str, way: str
):
    src = tmp_path / f"big{FORMAT_EXT[fmt]}"
    src.write_bytes(bomb(fmt) if way == "declared" else encoded(fmt))
    before = snapshot(tmp_path)
    args = ["fix", str(src), "-q", "--weights", str(tiny_checkpoint)]
    outcome = invoke(args + (["--max-pixels", "100"] if way == "flag" else []))
    check(outcome, {ExitCode.INPUT}, before, snapshot(tmp_path))
    assert "over the limit" in outcome.stderr


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"]


def _mode_cases() -> list[tuple[str, str]]:
    cases = []
    for mode in MODES:
        for fmt in FORMAT_EXT:
            try:
                encoded(fmt, mode)
            except (OSError, ValueError, KeyError):
                continue  # Pillow cannot write this mode in this format
            cases.append((mode, fmt))
    return cases


@pytest.mark.parametrize("mode,fmt", _mode_cases(), ids=lambda v: str(v))
def test_every_pillow_mode_in_every_format(
    tmp_path: Path, tiny_checkpoint: Path, mode: str, fmt: str
):
    src = tmp_path / f"m{FORMAT_EXT[fmt]}"
    src.write_bytes(encoded(fmt, mode))
    with Image.open(src) as opened:
        read_mode = opened.mode
        try:  # Pillow before 13 cannot read back the YCbCr TIFFs it writes
            opened.load()
            decodable = True
        except OSError:
            decodable = False
    before = snapshot(tmp_path)
    out = f"m_restored{FORMAT_EXT[fmt]}"
    outcome = invoke(["fix", str(src), "-q", "--weights", str(tiny_checkpoint)])
    expected = {ExitCode.OK} if decodable and read_mode != "F" else {ExitCode.INPUT}
    check(outcome, expected, before, snapshot(tmp_path), outputs={out})
    if outcome.code == 0:
        with Image.open(tmp_path / out) as result:
            assert result.size == (W, H)
            if "A" in read_mode and fmt in ("PNG", "WEBP", "TIFF"):
                assert "A" in result.mode, f"{read_mode} -> {result.mode}: alpha lost"
            if read_mode in ("L", "1", "I;16") and fmt in ("PNG", "TIFF"):
                assert result.mode in ("L", "I;16", "I;16B", "I"), f"{read_mode} -> {result.mode}"


def test_sixteen_bit_gray_alpha_png_stays_sixteen_bit_gray_alpha(
    tmp_path: Path, tiny_checkpoint: Path
):
    la = np.random.default_rng(3).integers(0, 65536, (H, W, 2)).astype(">u2")
    rows = b"".join(b"\0" + la[y].tobytes() for y in range(H))
    src = tmp_path / "la16.png"
    src.write_bytes(png(W, H, rows, depth=16, color=4))
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(tiny_checkpoint)])
    check(outcome, {ExitCode.OK}, before, snapshot(tmp_path), outputs={"la16_restored.png"})
    depth, color = (tmp_path / "la16_restored.png").read_bytes()[24:26]
    assert (depth, color) == (16, 4)  # IHDR: 16-bit gray + alpha
    with Image.open(tmp_path / "la16_restored.png") as out:  # Pillow shows it as RGBA
        alpha = np.asarray(out)[..., 3]
    assert np.array_equal(alpha, (la[..., 1] >> 8).astype(np.uint8))  # alpha passed through


def test_planar_sixteen_bit_tiff_keeps_its_values(tmp_path: Path):
    from anyrestore.engine.imageio import read_image

    planes = np.random.default_rng(4).integers(0, 65536, (3, H, W), dtype=np.uint16)
    tags = [(256, 3, [W]), (257, 3, [H]), (258, 3, [16, 16, 16]), (259, 3, [1])]
    tags += [(262, 3, [2]), (277, 3, [3]), (278, 3, [H]), (284, 3, [2])]
    tags += [(273, 4, [8 + i * H * W * 2 for i in range(3)]), (279, 4, [H * W * 2] * 3)]
    data = tiff(tags, planes.astype("<u2").tobytes())
    TOTALS["cases"] += 1
    image = read_image(data)
    assert image.bit_depth == 16
    want = np.moveaxis(planes, 0, -1).astype(np.float32) / 65535
    assert np.abs(image.rgb - want).max() < 1e-6


# -- generated cases: command-line misuse ---------------------------------------------------


def _usage_cases() -> list[tuple[str, list[str], int]]:
    long = "x" * 300 + ".png"
    return [
        ("no-args", ["fix"], 2),
        ("unknown-option", ["fix", "IN", "--bogus"], 2),
        ("dash-name", ["fix", "-photo.png"], 2),
        ("tile-not-int", ["fix", "IN", "--tile", "abc"], 2),
        ("max-pixels-zero", ["fix", "IN", "--max-pixels", "0"], 2),
        ("max-pixels-negative", ["fix", "IN", "--max-pixels", "-5"], 2),
        ("bad-format", ["fix", "IN", "--format", "gif"], 2),
        ("no-extension", ["fix", "IN", "-o", "OUT/noext"], 2),
        ("missing-input", ["fix", "nowhere.png"], 2),
        ("input-is-folder", ["fix", "OUT"], 2),
        ("input-name-too-long", ["fix", long], 2),
        ("output-name-too-long", ["fix", "IN", "-o", "OUT/" + long], 2),
        ("output-under-a-file", ["fix", "IN", "-o", "OUT/w.pt/x.png"], 2),
        ("json-to-stdout", ["fix", "IN", "-o", "-", "--json"], 2),
        ("overwrite-input", ["fix", "IN", "-o", "IN"], 2),
        ("unknown-model", ["fix", "IN", "--model", "nope"], 2),
        ("unknown-weights", ["fix", "IN", "--weights", "nope"], 4),
        ("model-without-weights", ["fix", "IN", "--model", "anyir_s"], 4),
        ("missing-weights-file", ["fix", "IN", "--weights", "OUT/none.safetensors"], 4),
        ("pickle-weights", ["fix", "IN", "--weights", "OUT/w.pt"], 4),
        ("model-weights-disagree", ["fix", "IN", "--weights", "TINY", "--model", "clusir_t"], 2),
        ("newline-in-name", ["fix", "OUT/a\nb.png"], 2),
        ("empty-output", ["fix", "IN", "-o", ""], 2),
        ("empty-output-equals", ["fix", "IN", "--output="], 2),
        ("empty-input", ["fix", ""], 2),
        ("empty-weights", ["fix", "IN", "--weights", ""], 2),
        ("several-to-one-file", ["fix", "IN", "IN", "-o", "OUT/x.png"], 2),
        ("several-to-stdout", ["fix", "IN", "IN", "-o", "-"], 2),
        ("stdin-among-several", ["fix", "IN", "-"], 2),
        ("several-bad-tile", ["fix", "IN", "IN", "--tile", "-3"], 2),
        ("quality-zero", ["fix", "IN", "--quality", "0"], 2),
        ("quality-over-100", ["fix", "IN", "--quality", "101"], 2),
        ("batch-quality-zero", ["batch", "DIR", "-o", "OUT/r", "--quality", "0"], 2),
        ("batch-no-output", ["batch", "DIR"], 2),
        ("batch-empty-output", ["batch", "DIR", "-o", ""], 2),
        ("batch-empty-input", ["batch", "", "-o", "OUT/r"], 2),
        (
            "batch-empty-suffix-is-fine-but-outdir-not",
            ["batch", "DIR", "--suffix", "", "-o", ""],
            2,
        ),
        ("bench-empty-images", ["bench", "--suite", "synthetic", "--images", ""], 2),
        ("train-empty-config", ["train", "-c", ""], 2),
        ("batch-same-folder", ["batch", "DIR", "-o", "DIR"], 2),
        ("batch-missing-folder", ["batch", "OUT/none", "-o", "OUT/r"], 2),
        ("batch-empty-glob", ["batch", "DIR", "-o", "OUT/r", "--glob", ""], 2),
        ("batch-absolute-glob", ["batch", "DIR", "-o", "OUT/r", "--glob", "/etc/*"], 2),
        ("batch-parent-glob", ["batch", "DIR", "-o", "OUT/r", "--glob", "../*"], 2),
        ("batch-unwritable-outdir", ["batch", "DIR", "-o", "/proc/anyrestore-x"], 2),
        ("batch-outdir-is-file", ["batch", "DIR", "-o", "IN"], 2),
        ("batch-suffix-slash", ["batch", "DIR", "-o", "OUT/r", "--suffix", "a/b"], 2),
        ("batch-bad-format", ["batch", "DIR", "-o", "OUT/r", "--format", "gif"], 2),
        ("batch-format-and-ext", ["batch", "DIR", "-o", "OUT/r", "-f", "png", "--ext", "png"], 2),
        ("unknown-command", ["frobnicate"], 2),
        ("weights-no-command", ["weights"], 2),
    ]


@pytest.mark.parametrize("name,args,code", _usage_cases(), ids=[c[0] for c in _usage_cases()])
def test_misuse_ends_in_one_error_line(
    tmp_path: Path, tiny_checkpoint: Path, name: str, args: list[str], code: int
):
    folder = tmp_path / "DIR"
    folder.mkdir()
    src = folder / "in.png"
    src.write_bytes(encoded("PNG"))
    (tmp_path / "OUT").mkdir()
    (tmp_path / "OUT" / "w.pt").write_bytes(b"pickle")
    subst = {"IN": str(src), "DIR": str(folder), "TINY": str(tiny_checkpoint)}
    real = [subst.get(a, a.replace("OUT/", f"{tmp_path}/OUT/")) for a in args]
    if args[:1] == ["fix"] or args[:1] == ["batch"]:
        real.append("-q")
    before = snapshot(tmp_path)
    outcome = invoke(real)
    check(outcome, {code}, before, snapshot(tmp_path), usage=True)
    assert "\n" not in outcome.stderr.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize(
    "args,said",
    [
        (["fix", "", "-o", "x.png"], "the argument after 'fix' is empty"),
        (["fix", "a.png", "-o", ""], "-o has an empty value"),
        ([""], "the first argument is empty"),
    ],
)
def test_an_empty_argument_is_named_by_what_comes_before_it(args: list[str], said: str):
    outcome = invoke(args)
    assert outcome.code == ExitCode.USAGE
    assert outcome.stderr.strip() == f"anyrestore: error: {said} (an unset shell variable?)"


def test_a_dash_file_before_double_dash_is_refused_not_misread(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    """`-old.jpg` would parse as `-o ld.jpg` and write a file the user never named."""
    (tmp_path / "a.png").write_bytes(encoded("PNG"))
    (tmp_path / "-old.png").write_bytes(encoded("PNG"))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    args = ["fix", "a.png", "-old.png", "-o", "out/", "--weights", str(tiny_checkpoint)]
    outcome = invoke(args)
    check(outcome, {ExitCode.USAGE}, before, snapshot(tmp_path), usage=True)
    assert not (tmp_path / "ld.png").exists()
    # The advice, followed as given, restores both photos where they were asked for
    advice = outcome.stderr.strip().rsplit("; write it ./-old.png: ", 1)[-1]
    assert shlex.split(advice)[0] == "anyrestore", outcome.stderr
    followed = invoke(shlex.split(advice)[1:])
    assert followed.code == ExitCode.OK, followed.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["-old.png", "a.png"]
    # As the value of an option that takes one, the same name is what the user meant.
    named = invoke(["fix", "a.png", "-o", "-old.png", "-q", "--weights", str(tiny_checkpoint)])
    assert named.code == ExitCode.OK, named.stderr


def test_a_dash_name_goes_after_double_dash(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    src = tmp_path / "-photo.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    outcome = invoke(["fix", "-q", "--weights", str(tiny_checkpoint), "--", "-photo.png"])
    check(outcome, {ExitCode.OK}, before, snapshot(tmp_path), outputs={"-photo_restored.png"})


def test_deprecated_spellings_still_work_with_a_warning(tmp_path: Path, tiny_checkpoint: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    outcome = invoke(
        ["batch", str(folder), "-o", str(tmp_path / "r"), "--ext", "jpg"]
        + ["--weights", str(tiny_checkpoint)]
    )
    check(outcome, {ExitCode.OK}, before, snapshot(tmp_path), outputs={"r/a.jpg"})
    assert "--ext is deprecated; use --format" in outcome.stderr


def test_batch_lines_are_not_wrapped(tmp_path: Path, tiny_checkpoint: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = "a-very-long-file-name-" * 6 + ".png"
    (folder / name).write_bytes(b"not an image at all")
    (folder / "ok.png").write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    outcome = invoke(
        ["batch", str(folder), "-o", str(tmp_path / "r")] + ["-w", str(tiny_checkpoint)]
    )
    check(outcome, {ExitCode.FAILED}, before, snapshot(tmp_path), outputs={"r/ok.png"}, usage=True)
    failed = [line for line in outcome.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and name in failed[0]


# -- generated cases: tampered weights ------------------------------------------------------


def _tamper_metadata(value: str | None, key: str) -> Callable[[dict, dict], None]:
    def apply(state: dict, meta: dict) -> None:
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value

    return apply


def _tensor_tamper(how: str) -> Callable[[dict, dict], None]:
    def apply(state: dict, meta: dict) -> None:
        key = sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)[0]
        t = state[key].clone()
        if how == "nan":
            t.view(-1)[0] = float("nan")
        elif how == "inf":
            t.view(-1)[-1] = float("-inf")
        elif how == "huge":
            t.view(-1)[0] = 1e30
        elif how == "int32":
            t = t.to(torch.int32)
        elif how == "float64":
            t = t.double()  # a float is fine: cast on load
        state[key] = t

    return apply


CONFIGS = {
    "null": "null",
    "list": "[1, 2]",
    "number": "3",
    "string": '"dim"',
    "not-json": "{dim: 8",
    "empty": "{}",
    "negative": json.dumps({"dim": -8, "blocks": [1, 1, 1, 1], "refinement_blocks": 1}),
    "zero": json.dumps({"dim": 0, "blocks": [1, 1, 1, 1], "refinement_blocks": 1}),
    "huge": json.dumps({"dim": 1 << 20, "blocks": [2, 2, 2, 2], "refinement_blocks": 1}),
    "wrong-type": json.dumps({"dim": "eight"}),
    "unknown-field": json.dumps({"dim": 8, "colour": 3}),
}


def _weights_cases() -> list[tuple[str, Callable[[dict, dict], None], int]]:
    cases = [(f"config-{k}", _tamper_metadata(v, "config"), 4) for k, v in CONFIGS.items()]
    cases += [
        ("no-config", _tamper_metadata(None, "config"), 4),
        ("no-arch", _tamper_metadata(None, "arch"), 4),
        ("arch-unknown", _tamper_metadata("vit", "arch"), 4),
        ("arch-other", _tamper_metadata("clusir", "arch"), 4),
        ("format-other", _tamper_metadata("diffusers", "format"), 4),
        ("name-other-arch", _tamper_metadata("clusir_t", "name"), 4),
        ("name-custom", _tamper_metadata("my-model", "name"), 0),
        ("version-odd", _tamper_metadata("99", "format_version"), 0),
    ]
    cases += [(f"tensor-{h}", _tensor_tamper(h), 4) for h in ("nan", "inf", "huge", "int32")]
    cases += [("tensor-float64", _tensor_tamper("float64"), 0)]
    return cases


@pytest.mark.parametrize("name,tamper,code", _weights_cases(), ids=[c[0] for c in _weights_cases()])
def test_tampered_weights_are_exit_4_naming_the_file(
    tmp_path: Path, tiny_checkpoint: Path, name: str, tamper: Callable, code: int
):
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint), "pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(tiny_checkpoint))
    tamper(state, meta)
    weights = tmp_path / "w" / "bad.safetensors"
    weights.parent.mkdir()
    save_file(state, str(weights), metadata=meta)
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(weights)])
    check(outcome, {code}, before, snapshot(tmp_path), outputs={"in_restored.png"})
    if code:
        assert str(weights) in outcome.stderr


@pytest.mark.parametrize("seed", range(6))
def test_flipped_header_byte_in_weights(tmp_path: Path, tiny_checkpoint: Path, seed: int):
    data = bytearray(tiny_checkpoint.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    at = int(np.random.default_rng(seed).integers(0, 8 + header))
    data[at] ^= 0xFF
    weights = tmp_path / "w" / "bad.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(bytes(data))
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(weights)])
    check(outcome, {0, 4}, before, snapshot(tmp_path), outputs={"in_restored.png"})


def _manifest_entry(path: Path, name: str, **extra: str) -> str:
    data = path.read_bytes()
    lines = [
        "[[weights]]",
        f'name = "{name}"',
        'model = "anyir_t"',
        'arch = "anyir"',
        'trained_for = ["noise"]',
        'license = "MIT"',
        f'sha256 = "{hashlib.sha256(data).hexdigest()}"',
        f"size = {len(data)}",
    ]
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", range(4))
def test_local_file_named_like_a_manifest_entry_is_checked(
    tmp_path: Path, tiny_checkpoint: Path, where: int
):
    manifest = tmp_path / "m" / "manifest.toml"
    manifest.parent.mkdir()
    (manifest.parent / "tiny.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    entry = _manifest_entry(tiny_checkpoint, "tiny", embedded="tiny.safetensors")
    manifest.write_text("schema_version = 1\n" + entry)
    data = bytearray(tiny_checkpoint.read_bytes())
    data[len(data) - 1 - where * 97] ^= 0x40  # inside the tensor data: undetectable otherwise
    copy = tmp_path / "w" / "tiny.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(bytes(data))
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    env = {"ANYRESTORE_MANIFEST": str(manifest)}
    outcome = invoke(["fix", str(src), "-q", "--weights", str(copy)], env=env)
    check(outcome, {ExitCode.WEIGHTS}, before, snapshot(tmp_path))
    assert str(copy) in outcome.stderr and "'tiny'" in outcome.stderr


@pytest.mark.parametrize(
    "content", [b"\x00\xff\xfe binary", b"[[weights]\nname=", b"schema_version = 7\n"]
)
def test_broken_manifest_is_exit_4(tmp_path: Path, tiny_checkpoint: Path, content: bytes):
    manifest = tmp_path / "m.toml"
    manifest.write_bytes(content)
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q"], env={"ANYRESTORE_MANIFEST": str(manifest)})
    check(outcome, {ExitCode.WEIGHTS}, before, snapshot(tmp_path))


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("command", ["fix", "verify"])
def test_cache_link_leaving_the_cache_is_refused_untouched(
    tmp_path: Path, tiny_checkpoint: Path, command: str
):
    precious = tmp_path / "precious" / "thesis.safetensors"
    precious.parent.mkdir()
    precious.write_bytes(b"years of work")
    cache = tmp_path / "hub"
    snap = cache / "models--org--tiny" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "tiny.safetensors").symlink_to(precious)
    manifest = tmp_path / "m.toml"
    entry = _manifest_entry(
        tiny_checkpoint, "tiny", repo_id="org/tiny", filename="tiny.safetensors", revision=COMMIT
    )
    manifest.write_text("schema_version = 1\n" + entry)
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    env = {"ANYRESTORE_MANIFEST": str(manifest), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    before = snapshot(tmp_path)
    args = (
        ["fix", str(src), "-q", "--weights", "tiny"] if command == "fix" else ["weights", "verify"]
    )
    outcome = invoke(args, env=env)
    check(outcome, {ExitCode.WEIGHTS}, before, snapshot(tmp_path), usage=command == "verify")
    assert precious.read_bytes() == b"years of work"
    assert "outside the Hub cache" in outcome.stderr


def test_non_finite_output_is_exit_4(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    from anyrestore.engine import Restorer

    real = Restorer._restore_batch

    def poisoned(self, batch):  # type: ignore[no-untyped-def]
        out = real(self, batch)
        out[..., 0, 0] = float("nan")  # as damaged weights would
        return out

    monkeypatch.setattr(Restorer, "_restore_batch", poisoned)
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(tiny_checkpoint)])
    check(outcome, {ExitCode.WEIGHTS}, before, snapshot(tmp_path))
    assert f"{tiny_checkpoint}: the model produced NaN" in outcome.stderr


# -- real processes: streams and signals ----------------------------------------------------


def cli(args: list[str], cwd: Path, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "anyrestore", *args],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        **kw,  # type: ignore[arg-type]
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> Outcome:
    _, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, "", err.decode(errors="replace"))


@pytest.mark.parametrize("inputs", [1, 3], ids=["one", "several"])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_full_or_closed_stdout_stops_the_run(
    tmp_path: Path, tiny_checkpoint: Path, stdout: str, inputs: int
):
    """Each output's line goes to stdout, once the file is in place: a closed stdout stops the
    run before any work, a full one at the first line (exit 2), the file it names written."""
    names = [f"in{i}.png" for i in range(inputs)]
    for name in names:
        (tmp_path / name).write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    out = ["-o", "o.png"] if inputs == 1 else ["-o", "out/"]
    args = ["fix", *names, *out, "-q", "--weights", str(tiny_checkpoint)]
    if stdout == "full":
        with open("/dev/full", "wb") as full:
            outcome = finish(cli(args, tmp_path, stdout=full))
    else:
        # Close fd 1 in the child before Python starts, as `>&-` does.
        closed = ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "anyrestore", *args]
        proc = subprocess.Popen(closed, cwd=tmp_path, stderr=subprocess.PIPE)
        outcome = finish(proc)
    first = {"o.png"} if inputs == 1 else {"out/in0.png"}
    written = first if stdout == "full" else set()
    after = snapshot(tmp_path)
    check(outcome, {ExitCode.USAGE}, before, {k: v for k, v in after.items() if k not in written})
    assert set(after) - set(before) == written


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_batch_json_with_a_full_or_closed_stdout_stops(
    tmp_path: Path, tiny_checkpoint: Path, stdout: str
):
    """batch --json puts each file in place before its record, as fix does."""
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"{i}.png").write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    args = ["batch", "in", "-o", "out", "--json", "-q", "--weights", str(tiny_checkpoint)]
    if stdout == "full":
        with open("/dev/full", "wb") as full:
            outcome = finish(cli(args, tmp_path, stdout=full))
    else:
        closed = ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "anyrestore", *args]
        outcome = finish(subprocess.Popen(closed, cwd=tmp_path, stderr=subprocess.PIPE))
    written = {"out/0.png"} if stdout == "full" else set()
    after = snapshot(tmp_path)
    check(outcome, {ExitCode.USAGE}, before, {k: v for k, v in after.items() if k not in written})
    assert set(after) - set(before) == written


def test_reader_going_away_ends_several_inputs_quietly(tmp_path: Path, tiny_checkpoint: Path):
    """`fix *.png -o out/ --json | head -1`: the run stops at the closed pipe with exit 0, as
    batch does, instead of failing every later file; what was announced is on disk."""
    names = [f"{i:03d}.png" for i in range(200)]  # far more work than the first line takes
    for name in names:
        (tmp_path / name).write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    args = ["fix", *names, "-o", "out/", "--json", "-q", "--weights", str(tiny_checkpoint)]
    proc = cli(args, tmp_path, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()
    outcome = finish(proc)
    after = snapshot(tmp_path)
    written = {k for k in after if k.startswith("out/")}
    check(outcome, {ExitCode.OK}, before, after, outputs=written)
    assert "failed" not in outcome.stderr
    assert f"out/{first['input']}" in written
    assert len(written) < len(names), "the run went on after its reader had gone"
    assert not [k for k in after if k.endswith(".tmp")], "a temporary file was left behind"


def test_closed_stdin_is_one_line(tmp_path: Path, tiny_checkpoint: Path):
    before = snapshot(tmp_path)
    args = ["fix", "-", "-q", "--weights", str(tiny_checkpoint)]
    closed = ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, "-m", "anyrestore", *args]
    outcome = finish(subprocess.Popen(closed, cwd=tmp_path, stderr=subprocess.PIPE))
    check(outcome, {ExitCode.USAGE}, before, snapshot(tmp_path))


def test_fifo_input_does_not_hang(tmp_path: Path, tiny_checkpoint: Path):
    os.mkfifo(tmp_path / "pipe.png")
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(tmp_path / "pipe.png"), "-q", "-w", str(tiny_checkpoint)])
    check(outcome, {ExitCode.INPUT}, before, snapshot(tmp_path))


@pytest.mark.parametrize(
    "signals,code",
    [
        ([signal.SIGTERM], 143),
        ([signal.SIGINT], 130),
        ([signal.SIGINT, signal.SIGINT], 130),
        ([signal.SIGHUP], 129),  # the ssh session dropped: it left its temporary behind
    ],
    ids=["term", "int", "int-twice", "hup"],
)
def test_signals_exit_cleanly_and_remove_temporaries(
    tmp_path: Path, tiny_checkpoint: Path, signals: list[int], code: int
):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(400):  # enough work that the signal lands mid-batch
        (folder / f"{i:03d}.png").write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    args = ["batch", "in", "-o", "out", "--json", "-q", "--weights", str(tiny_checkpoint)]
    # SIGHUP as a terminal sends it, whatever the tests run under (nohup would ignore it)
    default_hup = functools.partial(signal.signal, signal.SIGHUP, signal.SIG_DFL)
    proc = cli(args, tmp_path, stdout=subprocess.PIPE, preexec_fn=default_hup)
    assert proc.stdout is not None
    proc.stdout.readline()  # the first file is done: we are inside the loop
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    outcome = finish(proc)
    after = snapshot(tmp_path)
    done = {k for k in after if k.startswith("out/") and not k.split("/")[-1].startswith(".")}
    check(outcome, {code}, before, {k: v for k, v in after.items() if k not in done})
    assert not [k for k in after if k.endswith(".tmp")], "a temporary file was left behind"


def test_a_skipped_stdin_is_read_so_its_writer_ends_well(tmp_path: Path, tiny_checkpoint: Path):
    # Skipped unread, a piped input larger than the pipe's buffer killed its writer with
    # SIGPIPE, and `set -o pipefail` scripts saw the pipeline fail (141).
    (tmp_path / "big.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "out.png").write_bytes(encoded("PNG"))
    anyrestore = f"{sys.executable} -m anyrestore"
    line = f"set -o pipefail; cat big.bin | {anyrestore} fix - -o out.png --skip-existing -q"
    proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_an_interrupted_batch_says_what_it_restored(tmp_path: Path, tiny_checkpoint: Path):
    # Ctrl-C printed only "interrupted": which outputs were done took a look in OUTDIR.
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(400):
        (folder / f"{i:03d}.png").write_bytes(encoded("PNG"))
    args = ["batch", "in", "-o", "out", "--json", "--weights", str(tiny_checkpoint)]
    proc = cli(args, tmp_path, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    outcome = finish(proc)
    written = list((tmp_path / "out").iterdir())  # no temporary left either
    assert outcome.code == 130
    assert f"stopped: {len(written)} restored, 0 skipped, 0 failed, {400 - len(written)} not" in (
        outcome.stderr
    )
    assert outcome.stderr.rstrip().endswith("anyrestore: error: interrupted")


def test_under_nohup_a_hang_up_does_not_stop_the_run(tmp_path: Path, tiny_checkpoint: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(400):
        (folder / f"{i:03d}.png").write_bytes(encoded("PNG"))
    args = ["batch", "in", "-o", "out", "--json", "-q", "--weights", str(tiny_checkpoint)]
    nohup = ["sh", "-c", "trap '' HUP; exec \"$@\"", "sh", sys.executable, "-m", "anyrestore"]
    proc = subprocess.Popen(
        [*nohup, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert running and finish(proc).code == 143


def test_corrupt_exif_warns_nothing(tmp_path: Path, tiny_checkpoint: Path):
    """Pillow's 'Corrupt EXIF data' warning must not leak before (or instead of) our lines."""
    src = tmp_path / "exif.jpg"
    Image.fromarray(pixels(3)).save(src, format="JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff")
    before = snapshot(tmp_path)
    outcome = invoke(["fix", str(src), "-q", "--weights", str(tiny_checkpoint)])
    check(outcome, {ExitCode.OK}, before, snapshot(tmp_path), outputs={"exif_restored.jpg"})
    assert outcome.stderr == ""


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path: Path):
    from anyrestore.engine.imageio import read_image
    from anyrestore.errors import InputError

    TOTALS["cases"] += 1
    with pytest.raises(InputError) as exc:
        read_image(encoded("PNG"), max_pixels=10)
    assert "max_pixels" in str(exc.value) and "--" not in str(exc.value)
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    outcome = invoke(["fix", str(src), "-q", "--max-pixels", "10"])
    assert "--max-pixels or ANYRESTORE_MAX_PIXELS" in outcome.stderr


def test_command_modules_do_not_import_the_app():
    """Commands are registered in cli/app.py only; no command module imports it back."""
    import ast

    TOTALS["cases"] += 1
    cli_dir = Path(__file__).resolve().parents[2] / "anyrestore" / "cli"
    for path in cli_dir.glob("*.py"):
        if path.name == "app.py":
            continue
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "anyrestore.cli.app" not in imported, path.name


# Delays across the import of torch, part of which runs Python called from C++ (a signal
# raised there aborted the process with a C++ message and exit -6).
@pytest.mark.parametrize(
    "sig,delay",
    [(signal.SIGINT, 0.2), (signal.SIGTERM, 0.4), (signal.SIGTERM, 0.6), (signal.SIGINT, 0.9)],
)
def test_a_signal_while_starting_up_is_one_line(
    tmp_path: Path, tiny_checkpoint: Path, sig: int, delay: float
):
    """Ctrl-C (or SIGTERM) while Typer, Rich and torch are still importing."""
    src = tmp_path / "in.png"
    src.write_bytes(encoded("PNG"))
    before = snapshot(tmp_path)
    proc = cli(["fix", "in.png", "-q", "--weights", str(tiny_checkpoint)], tmp_path)
    time.sleep(delay)
    proc.send_signal(sig)
    outcome = finish(proc)
    after = snapshot(tmp_path)
    if outcome.code == 0:  # a fast machine finished first: then it must have succeeded whole
        check(outcome, {0}, before, after, outputs={"in_restored.png"})
    else:
        check(outcome, {128 + sig}, before, after)
