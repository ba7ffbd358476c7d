"""The synthetic suite: which photos it reads, and fixed-seed degradations of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from anyrestore.bench.candidates import identity_candidate
from anyrestore.bench.quality import run_quality
from anyrestore.bench.suites import SYNTHETIC_KINDS, SYNTHETIC_TASKS
from anyrestore.bench.synthetic import (
    SAMPLES_DIR,
    find_photos,
    load_photo,
    seed_for,
    synthetic_pairs,
)
from anyrestore.data.degradations import degrade
from anyrestore.errors import DataError, InputError
from anyrestore.metrics import psnr, ssim


def test_a_photo_over_pillows_limit_is_an_input_error(
    photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow refuses more than about 179 MP with its own error type: a panorama in the folder
    # ended the bench as an "internal error" (exit 1), not an unreadable input (exit 3).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 48 // 4)  # a.png: 48 x 40 px
    with pytest.raises(InputError, match="cannot read image .*a.png: .*decompression bomb"):
        load_photo(photos / "a.png")


def test_find_photos_skips_degraded_and_non_images(photos: Path) -> None:
    assert [p.name for p in find_photos(photos)] == ["a.png", "b.jpg"]


def test_photos_in_formats_it_cannot_read_stop_the_bench(photos: Path) -> None:
    """A score over the readable photos alone would read as one over the whole folder."""
    (photos / "c.heic").write_bytes(b"not decoded")
    (photos / "d.CR2").write_bytes(b"not decoded")
    with pytest.raises(
        InputError, match=r"2 files in formats .*\(1 HEIC, 1 camera RAW\): c.heic, d.CR2"
    ):
        find_photos(photos)


def test_the_shipped_samples_are_the_four_photos_whatever_lies_beside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `anyrestore fix anyrestore/assets/samples/chelsea.jpg` writes chelsea_restored.jpg next
    # to it: the default bench must not score a restoration as a clean photo.
    import shutil

    import anyrestore.bench.synthetic as synthetic

    samples = tmp_path / "samples"
    shutil.copytree(synthetic.SAMPLES_DIR, samples)
    shutil.copy2(samples / "chelsea.jpg", samples / "chelsea_restored.jpg")
    monkeypatch.setattr(synthetic, "SAMPLES_DIR", samples)
    assert [p.name for p in find_photos()] == list(synthetic.SAMPLE_PHOTOS)


def test_missing_or_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        find_photos(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"\.png/\.jpg"):
        find_photos(tmp_path / "empty")


def test_load_photo_downscales_the_longer_side(photos: Path) -> None:
    full = load_photo(photos / "a.png", max_side=None)
    small = load_photo(photos / "a.png", max_side=24)
    assert full.shape == (3, 40, 48)
    assert small.shape == (3, 20, 24)
    assert 0.0 <= small.min() and small.max() <= 1.0


def test_every_kind_is_applied_with_a_fixed_seed(photos: Path) -> None:
    files = find_photos(photos)
    first = list(synthetic_pairs(SYNTHETIC_KINDS, files, max_side=None))
    # The second photo alone: its place in the folder must not change its degradations.
    again = list(synthetic_pairs(SYNTHETIC_KINDS, files[1:], max_side=None))
    assert [p.kind for p in first[: len(SYNTHETIC_KINDS)]] == list(SYNTHETIC_KINDS)
    assert len(first) == 2 * len(SYNTHETIC_KINDS)
    for pair, repeat in zip(first[len(SYNTHETIC_KINDS) :], again, strict=True):
        assert torch.equal(pair.degraded, repeat.degraded)
        assert pair.degraded.shape == pair.clean.shape
        assert not torch.equal(pair.degraded, pair.clean)
    # The seed depends on the photo and the kind, so noise differs between photos.
    assert seed_for("a.png", "noise_25") != seed_for("b.jpg", "noise_25")


def test_photos_sharing_a_stem_keep_separate_per_image_records(tmp_path: Path) -> None:
    rng = torch.Generator().manual_seed(0)
    names = ("x.png", "x.jpg", "y.png", "猫.png", "犬.png", "a b.png", "a_b.png")
    for name in names:
        array = (torch.rand(24, 32, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(array).save(tmp_path / name)
    files = find_photos(tmp_path)
    tasks = [t for t in SYNTHETIC_TASKS if t.kind == "noise_25"]
    (tmp_path / "saved" / "probe").mkdir(parents=True)  # a folder of the user's: in no way
    records = run_quality(
        [identity_candidate()],
        tasks,
        synthetic_pairs(["noise_25"], files),
        suite="synthetic",
        per_image=True,
        save_dir=tmp_path / "saved",
    )
    images = sorted(r["image"] for r in records if r.get("image"))
    assert images == sorted(
        ["x.jpg", "x.png", "y", "猫", "犬", "a b", "a_b"]
    )  # unique stems stay short
    # One file per photo, even where two names clean up alike ("a b", "a_b")
    saved = sorted(p.name for p in (tmp_path / "saved").rglob("*_degraded.png"))
    assert len(saved) == 7 and "猫_degraded.png" in saved


def test_a_model_named_clean_does_not_overwrite_the_saved_reference(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # --save-images writes <photo>_clean.png and <photo>_<model>.png side by side: weights in
    # clean.safetensors wrote their restoration over the clean reference.
    import shutil

    from anyrestore.bench.candidates import resolve_candidates

    for stem in ("clean", "degraded"):
        shutil.copyfile(tiny_checkpoint, tmp_path / f"{stem}.safetensors")
    candidates = resolve_candidates(
        weights=[tmp_path / "clean.safetensors", tmp_path / "degraded.safetensors"],
        device="cpu",
        precision="fp32",
    )
    assert [c.label for c in candidates] == ["clean#2", "degraded#2"]


def test_identity_baseline_scores_the_degraded_input(photos: Path) -> None:
    files = find_photos(photos)
    kinds = ("noise_25", "L+H")
    tasks = [t for t in SYNTHETIC_TASKS if t.kind in kinds]
    records = run_quality(
        [identity_candidate()], tasks, synthetic_pairs(kinds, files), suite="synthetic"
    )
    by_kind = {r["kind"]: r for r in records}
    for kind in kinds:
        direct_p, direct_s = [], []
        for f in files:
            clean = load_photo(f)
            noisy = degrade(clean.unsqueeze(0), kind, seed=seed_for(f.name, kind))
            direct_p.append(psnr(noisy.double(), clean.unsqueeze(0).double()).item())
            direct_s.append(ssim(noisy.double(), clean.unsqueeze(0).double()).item())
        assert by_kind[kind]["psnr"] == pytest.approx(sum(direct_p) / 2, abs=1e-6)
        assert by_kind[kind]["ssim"] == pytest.approx(sum(direct_s) / 2, abs=1e-6)
        assert by_kind[kind]["images"] == 2
    average = by_kind["average"]
    assert average["psnr"] == pytest.approx(
        (by_kind["noise_25"]["psnr"] + by_kind["L+H"]["psnr"]) / 2
    )
    assert average["psnr_gain"] == 0.0


def test_shipped_samples_are_the_default_photos() -> None:
    photos = find_photos()
    assert photos, "anyrestore/assets/samples/ ships clean photos"
    sources = (SAMPLES_DIR / "SOURCES.md").read_text()
    for path in photos:
        assert "degraded" not in path.name
        assert path.name in sources  # each photo's source and license is documented
        assert load_photo(path, max_side=64).shape[0] == 3


def test_kinds_may_be_named_as_the_recipes_name_them() -> None:
    from anyrestore.bench.suites import select_tasks
    from anyrestore.errors import UsageError

    picked = select_tasks("synthetic", ["haze+snow", "rain", "snow+low_light+haze", "blur"])
    assert [t.kind for t in picked] == ["R", "H+S", "L+H+S", "blur"]  # the table's order
    with pytest.raises(UsageError, match="unknown kind 'rainn' for --suite synthetic"):
        select_tasks("synthetic", ["rainn"])
