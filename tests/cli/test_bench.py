"""``anyrestore bench`` end to end on tiny fake test trees, photos and models."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from anyrestore.cli.app import app
from anyrestore.data import iter_test_pairs
from anyrestore.metrics import psnr, ssim
from anyrestore.models import create_model
from anyrestore.weights.checkpoint import save_checkpoint

CDD11_FOLDERS = {
    "low": "L",
    "haze": "H",
    "rain": "R",
    "snow": "S",
    "low_haze": "L+H",
    "low_rain": "L+R",
    "low_snow": "L+S",
    "haze_rain": "H+R",
    "haze_snow": "H+S",
    "low_haze_rain": "L+H+R",
    "low_haze_snow": "L+H+S",
}


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _clean(seed: int, h: int = 24, w: int = 28) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([xx, yy, 0.5 * (xx + yy)], -1) * 0.7 + 0.15
    img = img + 0.08 * rng.standard_normal((h, w, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _damaged(clean: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean.astype(np.int16) + rng.integers(-40, 41, clean.shape), 0, 255).astype(
        np.uint8
    )


def _pair(lq: Path, gt: Path, seed: int) -> None:
    clean = _clean(seed)
    _write(gt, clean)
    _write(lq, _damaged(clean, seed + 1000))


def make_task_tree(root: Path, *, five: bool = False, n: int = 2) -> Path:
    """The three/five-task test tree of docs/bench.md with ``n`` tiny images per set."""
    test = root / "test"
    rain = test / "derain" / "Rain100L"
    for i in range(n):
        _write(test / "denoise" / "bsd68" / f"{i:03d}.png", _clean(i))
        _pair(rain / "input" / f"rain-{i}.png", rain / "target" / f"norain-{i}.png", 10 + i)
        _pair(test / "dehaze" / "input" / f"{i:04d}_0.8_0.2.png",
              test / "dehaze" / "target" / f"{i:04d}.png", 20 + i)  # fmt: skip
        if five:
            gopro, lol = test / "deblur" / "gopro", test / "enhance" / "lol"
            _pair(gopro / "input" / f"{i}.png", gopro / "target" / f"{i}.png", 30 + i)
            _pair(lol / "input" / f"{i}.png", lol / "target" / f"{i}.png", 40 + i)
    return root


def make_cdd11_tree(root: Path) -> Path:
    """CDD-11's test split: one clean image and its eleven degraded versions."""
    clean = _clean(0)
    _write(root / "test" / "clear" / "0001.png", clean)
    for j, folder in enumerate(CDD11_FOLDERS):
        _write(root / "test" / folder / "0001.png", _damaged(clean, j))
    return root


def _tensor(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1)
    return save_checkpoint(model, tmp_path_factory.mktemp("w") / "tiny.safetensors", name="tiny")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["bench", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _by(records: list[dict], model: str) -> dict[str, dict]:
    return {r["kind"]: r for r in records if r["model"] == model}


def test_three_identity_baseline_is_the_inputs_own_score(tmp_path: Path) -> None:
    root = make_task_tree(tmp_path / "three")
    code, out, _ = run("--suite", "three", "--data-root", str(root), "--baseline", "identity",
                       "--json")  # fmt: skip
    assert code == 0
    records = _by(json.loads(out), "identity")
    assert list(records) == ["sots", "rain100l", "cbsd68_15", "cbsd68_25", "cbsd68_50", "average"]
    rain = root / "test" / "derain" / "Rain100L"
    direct = [
        psnr(
            _tensor(rain / "input" / f"rain-{i}.png"), _tensor(rain / "target" / f"norain-{i}.png")
        )
        for i in range(2)
    ]
    assert records["rain100l"]["psnr"] == pytest.approx(float(sum(direct)) / 2, abs=1e-4)
    assert records["rain100l"]["images"] == 2
    # Denoising inputs are the data readers' fixed-seed noisy CBSD68 images.
    noisy = [p for p in iter_test_pairs("three", root, kinds=["noise_50"])]
    expected = np.mean([ssim(p["lq"].double(), p["gt"].double()).item() for p in noisy])
    assert records["cbsd68_50"]["ssim"] == pytest.approx(expected, abs=1e-5)
    assert (
        records["cbsd68_15"]["psnr"] > records["cbsd68_25"]["psnr"] > records["cbsd68_50"]["psnr"]
    )
    rows = [records[k]["psnr"] for k in records if k != "average"]
    assert records["average"]["psnr"] == pytest.approx(sum(rows) / len(rows))
    for r in records.values():
        assert r["suite"] == "three" and r["psnr_gain"] == 0.0


def test_five_with_a_model_csv_and_y_channel(tmp_path: Path, tiny_weights: Path) -> None:
    root = make_task_tree(tmp_path / "five", five=True, n=1)
    code, out, err = run("--suite", "five", "--data-root", str(root), "--weights",
                         str(tiny_weights), "--baseline", "identity", "--csv", "--y-channel")  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    # How the model ran is in its records and on stderr (the baseline has no compute path).
    assert {r["compute"] for r in rows if r["model"] == "tiny"} == {rows[-1]["compute"]}
    assert rows[-1]["compute"].startswith("cpu fp32") and f"tiny: {rows[-1]['compute']}" in err
    assert [r["kind"] for r in rows if r["model"] == "tiny"] == [
        "sots", "rain100l", "cbsd68_25", "gopro", "lol", "average",
    ]  # fmt: skip
    assert {r["channel"] for r in rows} == {"y"}
    for r in rows:
        assert float(r["ssim"]) <= 1.0
        if r["model"] == "tiny":
            base = next(b for b in rows if b["model"] == "identity" and b["kind"] == r["kind"])
            assert float(r["psnr_gain"]) == pytest.approx(float(r["psnr"]) - float(base["psnr"]))


def test_cdd11_table_has_every_combination_and_the_average(
    tmp_path: Path, tiny_weights: Path
) -> None:
    root = make_cdd11_tree(tmp_path / "cdd")
    code, out, _ = run("--suite", "cdd11", "--data-root", str(root), "--weights", str(tiny_weights),
                       "--baseline", "identity")  # fmt: skip
    assert code == 0
    assert "CDD-11" in out and "tiny" in out and "identity" in out and "ΔPSNR" in out
    for label in (*CDD11_FOLDERS.values(), "Average"):
        assert label in out


@pytest.mark.parametrize("suite", ["three", "five", "cdd11"])
def test_missing_data_root_names_the_expected_layout(tmp_path: Path, suite: str) -> None:
    code, out, err = run("--suite", suite, "--data-root", str(tmp_path / "nope"), "--baseline",
                         "identity")  # fmt: skip
    assert code == 6 and out == ""
    assert f"{suite} layout" in err and "expected ROOT/" in err and "Traceback" not in err


def test_malformed_root_names_the_missing_folder(tmp_path: Path) -> None:
    root = make_task_tree(tmp_path / "three", n=1)
    for f in (root / "test" / "dehaze" / "target").iterdir():
        f.unlink()
    (root / "test" / "dehaze" / "target").rmdir()
    code, _, err = run("--suite", "three", "--data-root", str(root), "--baseline", "identity")
    assert code == 6
    assert "dehaze/target" in err and "expected" in err


def test_unreadable_test_image_is_an_input_error_and_limit_caps_rows(tmp_path: Path) -> None:
    root = make_task_tree(tmp_path / "three", n=3)
    code, out, _ = run("--suite", "three", "--data-root", str(root), "--baseline", "identity",
                       "--limit", "2", "--json")  # fmt: skip
    assert code == 0
    assert {r["images"] for r in json.loads(out) if r["kind"] != "average"} == {2}
    (root / "test" / "dehaze" / "input" / "0001_0.8_0.2.png").write_bytes(b"not a png")
    code, _, err = run("--suite", "three", "--data-root", str(root), "--baseline", "identity")
    assert code == 3 and "0001_0.8_0.2.png" in err


def test_usage_errors(tmp_path: Path) -> None:
    assert run("--suite", "three", "--baseline", "identity")[0] == 2  # no --data-root
    assert run("--suite", "nope", "--baseline", "identity")[0] == 2
    assert run("--baseline", "mean")[0] == 2
    assert run("--baseline", "identity", "--json", "--csv")[0] == 2
    assert run("--suite", "speed", "--random-init")[0] == 2  # no model to build
    assert run("--suite", "speed", "--model", "anyir_t", "--random-init", "--per-image")[0] == 2
    photos = _photos(tmp_path / "photos")
    code, _, err = run("--images", str(photos), "--weights", str(tmp_path / "missing.safetensors"))
    assert code == 4 and "missing.safetensors" in err
    for side in ("-5", "10"):  # too small to score: refused, not an internal error
        code, _, err = run("--images", str(photos), "--baseline", "identity", "--max-side", side)
        assert code == 2 and "at least 11 px" in err
    code, _, err = run("--images", str(photos), "--baseline", "identity", "--kinds", "H",
                       "--save-images", str(photos / "a.png" / "sub"))  # fmt: skip
    assert code == 2 and "cannot write" in err
    # Another suite's option is refused, not ignored (the test sets keep their own sizes)
    for args, said in [
        (
            ("--suite", "five", "--data-root", str(tmp_path), "--max-side", "256"),
            "synthetic, not five",
        ),
        (("--suite", "speed", "--model", "anyir_t", "--max-side", "256"), "synthetic, not speed"),
        (("--baseline", "identity", "--repeats", "3"), "--repeats is for --suite speed"),
        (("--baseline", "identity", "--sizes", "64"), "--sizes is for --suite speed"),
        (("--baseline", "identity", "--warmup", "0"), "--warmup is for --suite speed"),
    ]:
        code, _, err = run(*args)
        assert code == 2 and said in err, (args, err)


def test_a_photo_too_small_to_score_is_an_input_error(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", _clean(1, 32, 48))
    _write(tmp_path / "tiny.png", _clean(1, 8, 8))
    code, out, err = run("--images", str(tmp_path), "--baseline", "identity", "--json")
    assert code == 3 and out == ""
    assert "tiny.png: 8x8 is too small to score (SSIM needs 11 px a side)" in err
    # Found from the headers before any model loads (these weights do not exist: exit 4)
    missing = str(tmp_path / "missing.safetensors")
    code, _, err = run("--images", str(tmp_path), "--weights", missing)
    assert code == 3 and "tiny.png: 8x8" in err
    # A photo shrunk below the window by --max-side says so
    (tmp_path / "tiny.png").unlink()
    code, _, err = run("--images", str(tmp_path), "--baseline", "identity", "--max-side", "12")
    assert code == 3 and "a.png: 12x8 at --max-side 12 (48x32 as stored) is too small" in err


def _photos(folder: Path) -> Path:
    _write(folder / "a.png", _clean(1, 40, 48))
    _write(folder / "a_degraded.png", _clean(2))  # not a clean photo: skipped
    return folder


def test_synthetic_with_model_saves_images(tmp_path: Path, tiny_weights: Path) -> None:
    photos = _photos(tmp_path / "photos")
    saved = tmp_path / "saved"
    code, out, _ = run("--images", str(photos), "--weights", str(tiny_weights), "--baseline",
                       "identity", "--json", "--max-side", "32", "--save-images", str(saved))  # fmt: skip
    assert code == 0
    records = json.loads(out)
    kinds = [r["kind"] for r in records if r["model"] == "tiny"]
    assert kinds[:4] == ["L", "H", "R", "S"] and kinds[-5:] == [
        "noise_15", "noise_25", "noise_50", "blur", "average",
    ]  # fmt: skip
    assert all(r["images"] == 1 for r in records if r["kind"] != "average")
    for kind in ("L+H+S", "noise_25", "blur"):
        folder = saved / "synthetic" / kind
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["a_clean.png", "a_degraded.png", "a_tiny.png"]
        with Image.open(folder / "a_tiny.png") as img:
            assert img.size == (32, 27)  # 48x40 downscaled to a longer side of 32
    # The saved degraded image is what the identity baseline scored.
    noisy = _tensor(saved / "synthetic" / "noise_50" / "a_degraded.png")
    clean = torch.from_numpy(np.asarray(
        Image.open(photos / "a.png").resize((32, 27), Image.Resampling.LANCZOS), dtype=np.float64
    ) / 255.0).permute(2, 0, 1)  # fmt: skip
    identity = _by(records, "identity")["noise_50"]["psnr"]
    assert psnr(noisy, clean).item() == pytest.approx(identity, abs=0.05)  # 8-bit rounding


def test_synthetic_defaults_to_the_shipped_samples() -> None:
    code, out, _ = run("--baseline", "identity", "--limit", "1", "--max-side", "48", "--json")
    assert code == 0
    records = json.loads(out)
    assert len(records) == 16 and all(r["suite"] == "synthetic" for r in records)
    assert all(r["images"] == 1 for r in records if r["kind"] != "average")


def test_per_image_reports_every_photo_in_json_and_as_a_second_table(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    _write(photos / "b[raw].png", _clean(3, 36, 40))  # brackets: text, not Rich markup
    args = ("--images", str(photos), "--baseline", "identity", "--max-side", "32", "--per-image")
    code, out, _ = run(*args, "--json")
    assert code == 0
    records = json.loads(out)
    images = [r for r in records if "image" in r]
    assert len(images) == 2 * 15 and {r["image"] for r in images} == {"a", "b[raw]"}
    means = {r["kind"]: r["psnr"] for r in records if "image" not in r}
    blur = [r["psnr"] for r in images if r["kind"] == "blur"]
    assert means["blur"] == pytest.approx(sum(blur) / 2)
    code, out, _ = run(*args)
    assert code == 0 and "Per image" in out and "│ b[raw] " in out and "Average" in out


def test_kinds_scores_only_the_rows_asked_for_with_the_full_runs_numbers(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    args = ("--images", str(photos), "--baseline", "identity", "--max-side", "32", "--json")
    code, out, _ = run(*args)
    assert code == 0
    full = _by(json.loads(out), "identity")
    code, out, _ = run(*args, "--kinds", "noise_25,H+S")
    assert code == 0
    some = _by(json.loads(out), "identity")
    assert list(some) == ["H+S", "noise_25", "average"]  # the suite's order, not the option's
    for kind in ("H+S", "noise_25"):  # same seeds: the same degraded images as the full run
        assert some[kind]["psnr"] == pytest.approx(full[kind]["psnr"])
    assert some["average"]["psnr"] == pytest.approx(
        (full["H+S"]["psnr"] + full["noise_25"]["psnr"]) / 2
    )


def test_kinds_needs_only_the_chosen_test_folders(tmp_path: Path) -> None:
    root = make_cdd11_tree(tmp_path / "cdd")
    for folder in ("low_haze", "haze_snow"):  # rows not asked for are not looked for
        for f in (root / "test" / folder).iterdir():
            f.unlink()
        (root / "test" / folder).rmdir()
    code, out, _ = run("--suite", "cdd11", "--data-root", str(root), "--baseline", "identity",
                       "--kinds", "L,R", "--json")  # fmt: skip
    assert code == 0
    assert [r["kind"] for r in json.loads(out)] == ["L", "R", "average"]
    code, _, err = run("--suite", "cdd11", "--data-root", str(root), "--baseline", "identity",
                       "--kinds", "H+S")  # fmt: skip
    assert code == 6 and "haze_snow" in err


def test_kinds_unknown_or_on_speed_is_a_usage_error(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    code, out, err = run("--images", str(photos), "--baseline", "identity", "--kinds", "fog")
    assert code == 2 and out == ""
    assert "unknown kind 'fog'" in err and "noise_25" in err and "Traceback" not in err
    assert run("--images", str(photos), "--baseline", "identity", "--kinds", ",")[0] == 2
    code, _, err = run("--suite", "speed", "--model", "anyir_t", "--random-init", "--kinds", "H")
    assert code == 2 and "--kinds" in err
    # A speed run times made-up images: quality options would be dropped without a word.
    for option in (["--images", str(photos)], ["--save-images", str(tmp_path)], ["--y-channel"]):
        code, out, err = run("--suite", "speed", "--model", "anyir_t", "--random-init", *option)
        assert code == 2 and out == "" and f"{option[0]} is for the quality suites" in err
    code, out, err = run("--suite", "speed", "--model", "anyir_t", "--random-init",
                         "--precision", ",")  # fmt: skip
    assert code == 2 and out == "" and "names no precision" in err


def test_speed_json_and_table(tmp_path: Path, tiny_weights: Path) -> None:
    code, out, _ = run("--suite", "speed", "--weights", str(tiny_weights), "--device", "cpu",
                       "--sizes", "16,24x20,tiled:72x40,tiled:1100x24", "--tile", "32",
                       "--repeats", "2", "--json")  # fmt: skip
    assert code == 0
    records = json.loads(out)
    assert [r["size"] for r in records] == ["16x16", "24x20", "72x40 tiled", "1100x24 tiled"]
    # As `fix` does: AnyIR records image-wide statistics, so up to its reference side (1024)
    # an image is one whole-image pass even above the tile size, and the record says so.
    tiles = [r["tiles"] for r in records]
    assert tiles[:3] == [1, 1, 1] and tiles[3] > 1
    for r in records:
        assert {"model", "suite", "kind", "psnr", "ssim", "seconds", "megapixels_per_s",
                "peak_mem_mb", "size"} <= set(r)  # fmt: skip
        assert r["model"] == "tiny" and r["device"] == "cpu" and r["seconds"] > 0
        assert r["compute"].startswith("cpu fp32 channels-last") and r["threads"] >= 1
        assert r["megapixels_per_s"] == pytest.approx(r["width"] * r["height"] / 1e6 / r["seconds"])
    code, out, _ = run("--suite", "speed", "--model", "anyir_t", "--random-init", "--device",
                       "cpu", "--sizes", "16", "--repeats", "1")  # fmt: skip
    assert code == 0
    assert "anyir_t" in out and "16x16" in out and "MP/s" in out
    # Several precisions side by side, one record each, labelled by precision.
    code, out, _ = run("--suite", "speed", "--weights", str(tiny_weights), "--device", "cpu",
                       "--sizes", "16", "--repeats", "1", "--precision", "fp32,bf16",
                       "--threads", "1", "--json")  # fmt: skip
    assert code == 0
    paths = {r["model"]: r["compute"] for r in json.loads(out)}
    assert set(paths) == {"tiny [fp32]", "tiny [bf16]"}
    assert paths["tiny [bf16]"].startswith("cpu bf16 channels-last, 1 thread (requested")


def test_library_warnings_read_as_the_tools_own(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bench, like fix, says "anyrestore: warning:" before what the engine warns of
    import anyrestore.compute

    monkeypatch.setattr(anyrestore.compute, "_cores", lambda: 1)
    before = torch.get_num_threads()
    try:
        code, _, err = run("--suite", "speed", "--weights", str(tiny_weights), "--device", "cpu",
                           "--sizes", "16", "--repeats", "1", "--threads", "2")  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert code == 0
    assert "anyrestore: warning: 2 threads on 1 core: threads beyond one a core" in err


def test_speed_does_not_build_baselines_it_never_times(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyrestore.bench.candidates as candidates

    def missing() -> None:  # as without the classical extra installed
        raise candidates.UsageError("the classical baseline needs bm3d")

    monkeypatch.setattr(candidates, "classical_candidate", missing)
    code, out, err = run("--suite", "speed", "--weights", str(tiny_weights), "--device", "cpu",
                         "--sizes", "16", "--repeats", "1", "--baseline", "classical",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert [r["model"] for r in json.loads(out)] == ["tiny"]
