"""Datasets: the papers' layouts read from tiny fake trees, splits, crops, bad files, errors."""

from __future__ import annotations

from pathlib import Path, PurePath

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from anyrestore.data import build_dataset, degrade_batch, iter_test_pairs, load_image
from anyrestore.data.layouts import CDD11_FOLDERS, EXPANSION_RATIOS, video_sequence
from anyrestore.errors import DataError


def write(
    path: Path, seed: int = 0, size: tuple[int, int] = (40, 48), value: int | None = None
) -> np.ndarray:
    """A small RGB image (h, w) = size; distinct per seed (or flat ``value``)."""
    rng = np.random.default_rng(seed)
    if value is None:
        array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    else:
        array = np.full((*size, 3), value, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def write_pair(lq: Path, gt: Path, seed: int, size: tuple[int, int] = (40, 48)) -> None:
    """A clean image and its 'degraded' version: the colour negative, so pairs can be checked."""
    clean = write(gt, seed, size)
    lq.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(255 - clean).save(lq)


def assert_pairs_aligned(item: dict) -> None:
    assert torch.allclose(item["lq"], 1 - item["gt"], atol=1e-6)


# --- paired folders --------------------------------------------------------------------------


def test_paired_matches_stems_across_extensions(tmp_path: Path) -> None:
    for i in range(6):
        write_pair(tmp_path / "lq" / f"img{i}.png", tmp_path / "gt" / f"img{i}.bmp", seed=i)
    ds = build_dataset("paired", tmp_path, split="test", kinds=["rain"])
    items = [ds[i] for i in range(len(ds))]
    assert sorted(it["name"] for it in items) == [f"img{i}" for i in range(6)]
    for it in items:
        assert it["lq"].shape == (3, 40, 48) and it["kind"] == "rain"
        assert_pairs_aligned(it)


def test_paired_train_crops_and_flips_keep_pairs_aligned(tmp_path: Path) -> None:
    for i in range(6):
        write_pair(tmp_path / "input" / f"{i}.png", tmp_path / "target" / f"{i}.png", seed=i)
    ds = build_dataset("paired", tmp_path, split="train", crop=24, val_fraction=0.0)
    torch.manual_seed(0)
    items = [ds[i % len(ds)] for i in range(24)]
    for it in items:
        assert it["lq"].shape == it["gt"].shape == (3, 24, 24)
        assert (
            it["gt"].dtype == torch.float32
            and 0 <= float(it["gt"].min()) <= float(it["gt"].max()) <= 1
        )
        assert_pairs_aligned(it)
    # the crops move around and flips happen: not every crop of image 0 is the same
    crops = [ds[0]["gt"] for _ in range(6)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_images_smaller_than_the_crop_are_reflect_padded(tmp_path: Path) -> None:
    write_pair(tmp_path / "lq" / "a.png", tmp_path / "gt" / "a.png", seed=0, size=(10, 7))
    write_pair(tmp_path / "lq" / "b.png", tmp_path / "gt" / "b.png", seed=1, size=(10, 7))
    ds = build_dataset("paired", tmp_path, split="val", crop=32, val_fraction=0.5)
    item = ds[0]
    assert item["gt"].shape == (3, 32, 32)
    assert_pairs_aligned(item)
    original = load_image(tmp_path / "gt" / f"{item['name']}.png")
    assert torch.equal(item["gt"][:, 11:21, 12:19], original)  # centred crop of the padded image


def test_paired_root_without_folders_names_the_layout(tmp_path: Path) -> None:
    write(tmp_path / "photos" / "a.png")
    with pytest.raises(DataError, match=r"paired layout.*\{lq,gt\}"):
        build_dataset("paired", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("paired", tmp_path / "missing")


@pytest.mark.parametrize(
    "option",
    [
        {"degrade_in_loop": True},
        {"dark_scenes": 0.5},
        {"misty_scenes": 0.5},
        {"pale_scenes": 0.5},
        {"kinds": {"rain": 1.0, "haze": 0.0}},  # weights: on real pairs they were ignored
    ],
)
def test_scene_options_on_real_pairs_are_refused(tmp_path: Path, option: dict) -> None:
    # a real degraded/clean pair cannot be degraded again or re-toned consistently; ignoring the
    # option would hide it
    write_pair(tmp_path / "lq" / "a.png", tmp_path / "gt" / "a.png", seed=0, size=(10, 7))
    with pytest.raises(ValueError, match="needs the synthetic layout"):
        build_dataset("paired", tmp_path, split="train", crop=8, **option)


def test_paired_copies_of_one_photo_at_other_scales_stay_on_one_side(tmp_path: Path) -> None:
    # A corpus degraded offline keeps the __s100/__s050 copies: one in val and one in train
    # would score val on photos the run trained on.
    for i in range(30):
        for scale in ("s100", "s050"):
            name = f"p{i}__{scale}.png"
            write_pair(tmp_path / "lq" / name, tmp_path / "gt" / name, seed=i, size=(8, 8))
    train = build_dataset("paired", tmp_path, split="train", crop=8, val_fraction=0.3)
    val = build_dataset("paired", tmp_path, split="val", crop=8, val_fraction=0.3)

    def photos(ds) -> set[str]:
        return {ds.samples[i].name.split("__")[0] for i in range(len(ds.samples))}

    assert photos(val) and not photos(train) & photos(val)


# --- synthetic on-the-fly ---------------------------------------------------------------------


def make_photos(folder: Path, n: int) -> None:
    for i in range(n):
        write(folder / ("sub" if i % 2 else "") / f"p{i:02d}.png", seed=i)


def test_validation_split_is_fixed_and_disjoint(tmp_path: Path) -> None:
    make_photos(tmp_path, 20)
    train = build_dataset("synthetic", tmp_path, split="train", val_fraction=0.25, seed=1)
    val = build_dataset("synthetic", tmp_path, split="val", val_fraction=0.25, seed=1)
    again = build_dataset("synthetic", tmp_path, split="val", val_fraction=0.25, seed=1)
    train_names = {s.name for s in train.samples}
    val_names = [s.name for s in val.samples]
    assert val_names == [s.name for s in again.samples]
    assert len(val_names) == 5 and not train_names & set(val_names)
    assert train_names | set(val_names) == {f"{'sub/' if i % 2 else ''}p{i:02d}" for i in range(20)}
    # A run that continues another (a new seed) holds out the same images; the split moves
    # only with its own seed.
    reseeded = build_dataset("synthetic", tmp_path, split="val", val_fraction=0.25, seed=2)
    assert [s.name for s in reseeded.samples] == val_names
    other = build_dataset("synthetic", tmp_path, split="val", val_fraction=0.25, split_seed=2)
    assert [s.name for s in other.samples] != val_names
    # validation items are reproducible crops and degradations
    assert all(torch.equal(val[i]["lq"], again[i]["lq"]) for i in range(len(val)))


def test_synthetic_mix_weights_and_on_the_fly_degradation(tmp_path: Path) -> None:
    make_photos(tmp_path, 4)
    ds = build_dataset(
        "synthetic",
        tmp_path,
        split="train",
        crop=16,
        val_fraction=0.0,
        kinds={"low_light": 1, "haze": 0},
    )
    torch.manual_seed(0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["kind"] == "low_light"
        assert float(item["lq"].mean()) < float(item["gt"].mean())
        # quantised like a saved 8-bit image
        assert torch.allclose(item["lq"] * 255, (item["lq"] * 255).round(), atol=1e-4)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_kind_weight_must_be_a_finite_number_not_below_zero(
    tmp_path: Path, weight: float
) -> None:
    # An infinite weight passed, and made every draw's probabilities NaN.
    make_photos(tmp_path, 2)
    with pytest.raises(ValueError, match="weight of 'haze' must be a finite number >= 0"):
        build_dataset("synthetic", tmp_path, kinds={"low_light": 1, "haze": weight})


def test_degrade_in_loop_returns_clean_crops_for_degrade_batch(tmp_path: Path) -> None:
    make_photos(tmp_path, 6)
    ds = build_dataset(
        "synthetic",
        tmp_path,
        split="train",
        crop=16,
        val_fraction=0.0,
        kinds=["haze", "noise_50"],
        degrade_in_loop=True,
    )
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=6, shuffle=False)))
    assert batch["lq"].shape == (6, 3, 16, 16) and torch.equal(batch["lq"], batch["gt"])
    assert set(batch["kind"]) <= {"haze", "noise_50"}
    lq = degrade_batch(batch["gt"], batch["kind"], seed=0)
    assert lq.shape == batch["gt"].shape and not torch.equal(lq, batch["gt"])
    with pytest.raises(ValueError, match="synthetic"):
        build_dataset("paired", tmp_path, degrade_in_loop=True)


def _clean_crop_means(ds, n: int) -> dict[str, list[float]]:
    """Mean brightness of the clean target of ``n`` training items, by kind."""
    torch.manual_seed(0)
    out: dict[str, list[float]] = {}
    for i in range(n):
        item = ds[i % len(ds)]
        out.setdefault(item["kind"], []).append(float(item["gt"].mean()))
    return out


def test_crops_to_be_hazed_are_never_upside_down(tmp_path: Path) -> None:
    """Synthetic haze is thickest at the top, as the far end of a photo: a crop turned over
    first would be hazed on its foreground. Other kinds still turn over half the time."""
    rows = np.linspace(0, 255, 16, dtype=np.uint8)[:, None, None]  # dark top, bright bottom
    for i in range(2):
        Image.fromarray(np.broadcast_to(rows, (16, 16, 3)).copy()).save(tmp_path / f"r{i}.png")
    kinds = {"haze": 1.0, "L+H+S": 1.0, "noise_15": 1.0, "H+R": 1.0}
    common = {"split": "train", "crop": 16, "val_fraction": 0.0, "kinds": kinds}
    for on_device in (False, True):
        ds = build_dataset("synthetic", tmp_path, degrade_in_loop=on_device, **common)
        torch.manual_seed(0)
        upside_down: dict[str, list[bool]] = {}
        for _ in range(160):
            item = ds[0]
            gt = item["gt"]
            upside_down.setdefault(item["kind"], []).append(
                bool(gt[:, 0].mean() > gt[:, -1].mean())
            )
        assert all(len(v) > 20 for v in upside_down.values())
        for kind in ("haze", "L+H+S", "H+R"):
            assert not any(upside_down[kind]), kind
        assert 0.25 < sum(upside_down["noise_15"]) / len(upside_down["noise_15"]) < 0.75


def test_dark_scenes_darken_targets_of_other_kinds_but_never_low_light(tmp_path: Path) -> None:
    # flat grey photos: an untouched clean crop has mean exactly 200/255
    for i in range(4):
        write(tmp_path / f"grey{i}.png", size=(32, 32), value=200)
    common = {"split": "train", "crop": 16, "val_fraction": 0.0, "kinds": ["blur", "low_light"]}
    plain = _clean_crop_means(build_dataset("synthetic", tmp_path, **common), 80)
    dark = _clean_crop_means(build_dataset("synthetic", tmp_path, dark_scenes=1.0, **common), 80)
    grey = 200 / 255
    assert all(m == pytest.approx(grey, abs=1e-6) for ms in plain.values() for m in ms)
    # every blur target is now a darker scene, inside the documented range; low light untouched
    assert dark["blur"] and all(0.25 * grey - 1e-6 <= m <= 0.75 * grey + 1e-6 for m in dark["blur"])
    assert len({round(m, 4) for m in dark["blur"]}) > 5  # a spread of exposures, not one
    assert dark["low_light"] and all(m == pytest.approx(grey, abs=1e-6) for m in dark["low_light"])


def test_clean_kind_trains_on_identity_pairs_darkened_like_the_rest(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / f"grey{i}.png", size=(32, 32), value=200)
    common = {"split": "train", "crop": 16, "val_fraction": 0.0}
    ds = build_dataset("synthetic", tmp_path, kinds={"clean": 1.0, "blur": 1.0}, **common)
    torch.manual_seed(0)
    items = [ds[i % len(ds)] for i in range(24)]
    clean = [it for it in items if it["kind"] == "clean"]
    assert clean and len(clean) < len(items)  # drawn from the mix like any kind
    assert all(torch.equal(it["lq"], it["gt"]) for it in clean)
    dark = build_dataset("synthetic", tmp_path, kinds=["clean"], dark_scenes=1.0, **common)
    item = dark[0]  # the input is the darkened target, saved to 8 bits like every input
    assert float(item["gt"].mean()) < 0.8 * 200 / 255
    assert torch.allclose(item["lq"], item["gt"], atol=0.5 / 255 + 1e-6)


def test_slight_blur_trains_on_short_shakes_of_darkened_scenes(tmp_path: Path) -> None:
    stripes = np.kron(np.indices((8, 8)).sum(0) % 2, np.ones((4, 4)))  # 4-px checkerboard
    for i in range(2):
        Image.fromarray((40 + 160 * stripes).astype(np.uint8)).convert("RGB").save(
            tmp_path / f"check{i}.png"
        )
    ds = build_dataset(
        "synthetic",
        tmp_path,
        split="train",
        crop=32,
        val_fraction=0.0,
        kinds={"slight_blur": 1.0},
        dark_scenes=1.0,
    )
    torch.manual_seed(0)
    for i in range(4):
        item = ds[i % len(ds)]
        assert item["kind"] == "slight_blur"
        # a dark scene like any kind without low light, then shaken: edges soften, tones stay
        assert float(item["gt"].mean()) < 0.8 * 120 / 255
        edges = lambda x: float((x[..., 1:] - x[..., :-1]).abs().mean())  # noqa: E731
        assert edges(item["lq"]) < 0.9 * edges(item["gt"])
        assert float(item["lq"].mean()) == pytest.approx(float(item["gt"].mean()), abs=0.02)


def test_dark_scenes_are_training_only_and_validated(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / f"grey{i}.png", size=(32, 32), value=200)
    val = build_dataset(
        "synthetic",
        tmp_path,
        split="val",
        crop=16,
        val_fraction=0.5,
        kinds=["blur"],
        dark_scenes=1.0,
    )
    assert all(float(val[i]["gt"].mean()) == pytest.approx(200 / 255) for i in range(len(val)))
    with pytest.raises(ValueError, match="probability"):
        build_dataset("synthetic", tmp_path, dark_scenes=1.5)
    with pytest.raises(ValueError, match="synthetic"):
        build_dataset("paired", tmp_path, dark_scenes=0.5)


def _scene_option_keeps_identity_and_validation(
    root: Path, common: dict, option: str, flat: float
) -> dict:
    """With ``option`` at 1, an identity pair stays one (its input is the re-toned target itself)
    and the validation split keeps the photos as they are (all of mean ``flat``). Returns the
    identity pair."""
    ds = build_dataset("synthetic", root, **{option: 1.0}, **{**common, "kinds": ["clean"]})
    item = ds[0]
    assert torch.allclose(item["lq"], item["gt"], atol=0.5 / 255 + 1e-6)
    val_split = {**common, "split": "val", "val_fraction": 0.5}
    val = build_dataset("synthetic", root, **{option: 1.0}, **val_split)
    assert all(float(val[i]["gt"].mean()) == pytest.approx(flat) for i in range(len(val)))
    return item


def test_misty_scenes_veil_targets_of_kinds_without_haze(tmp_path: Path) -> None:
    # flat dark photos (a forest at dusk): any mist lifts them towards its light (>= 0.3)
    for i in range(4):
        write(tmp_path / f"dark{i}.png", size=(32, 32), value=40)
    kinds = {"blur": 1.0, "clean": 1.0, "haze": 1.0, "L+H": 1.0}
    common = {"split": "train", "crop": 16, "val_fraction": 0.0, "kinds": kinds}
    dark = 40 / 255
    misty = _clean_crop_means(build_dataset("synthetic", tmp_path, misty_scenes=1.0, **common), 120)
    for kind in ("blur", "clean"):  # veiled, by varying amounts
        assert misty[kind] and all(m > dark + 0.01 for m in misty[kind])
        assert len({round(m, 3) for m in misty[kind]}) > 3
    for kind in ("haze", "L+H"):  # the target of a dehazing kind stays haze-free
        assert misty[kind] and all(m == pytest.approx(dark, abs=1e-6) for m in misty[kind])
    half = _clean_crop_means(build_dataset("synthetic", tmp_path, misty_scenes=0.5, **common), 120)
    share = sum(m > dark + 0.01 for m in half["blur"]) / len(half["blur"])
    assert 0.2 < share < 0.8
    item = _scene_option_keeps_identity_and_validation(tmp_path, common, "misty_scenes", dark)
    assert float(item["gt"].mean()) > dark + 0.01
    with pytest.raises(ValueError, match="probability"):
        build_dataset("synthetic", tmp_path, misty_scenes=1.5)
    with pytest.raises(ValueError, match="synthetic"):
        build_dataset("paired", tmp_path, misty_scenes=0.5)


def test_synthetic_test_split_is_every_image_per_kind_with_fixed_noise(tmp_path: Path) -> None:
    make_photos(tmp_path, 3)
    first = list(iter_test_pairs("synthetic", tmp_path, kinds=["noise_25", "blur"]))
    second = list(iter_test_pairs("synthetic", tmp_path, kinds=["noise_25", "blur"]))
    assert len(first) == 6 and {it["kind"] for it in first} == {"noise_25", "blur"}
    assert all(it["lq"].shape == (3, 40, 48) for it in first)
    assert all(torch.equal(a["lq"], b["lq"]) for a, b in zip(first, second, strict=True))
    # Fixed per (photo, kind): a copy of the folder under another name gives the same inputs.
    copy = tmp_path.parent / (tmp_path.name + "_copy")
    make_photos(copy, 3)
    third = list(iter_test_pairs("synthetic", copy, kinds=["noise_25", "blur"]))
    assert all(torch.equal(a["lq"], b["lq"]) for a, b in zip(first, third, strict=True))


def test_photos_named_as_degraded_ones_are_not_learnt_as_clean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_photos(tmp_path, 3)
    write(tmp_path / "sub" / "sample_Degraded.jpg", seed=9)
    with caplog.at_level("WARNING", logger="anyrestore"):
        ds = build_dataset("synthetic", tmp_path, split="train", crop=16, val_fraction=0.0)
    assert len(ds.samples) == 3 and not any("egraded" in s.name for s in ds.samples)
    assert "1 images under" in caplog.text and "sub/sample_Degraded.jpg" in caplog.text
    assert len(list(iter_test_pairs("synthetic", tmp_path, kinds=["blur"]))) == 3


def test_corrupt_training_image_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_photos(tmp_path, 5)
    (tmp_path / "p99_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = build_dataset(
        "synthetic", tmp_path, split="train", crop=16, val_fraction=0.0, kinds=["haze"]
    )
    with caplog.at_level("WARNING", logger="anyrestore"):
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    assert len(items) == 12 and all(it["gt"].shape == (3, 16, 16) for it in items)
    messages = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(messages) == 1 and "p99_broken.png" in messages[0]
    broken = next(i for i, s in enumerate(ds.samples) if s.name == "p99_broken")
    assert ds[broken]["name"] == ds.samples[(broken + 1) % len(ds)].name  # the next sample


def test_corrupt_test_image_is_skipped_by_iter_test_pairs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_photos(tmp_path, 2)
    (tmp_path / "zz.jpg").write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="anyrestore"):
        items = list(iter_test_pairs("synthetic", tmp_path, kinds=["haze"]))
    assert len(items) == 2 and "zz.jpg" in caplog.text


# --- the papers' layouts ------------------------------------------------------------------------


def make_task_tree(root: Path, five: bool) -> None:
    train, test = root / "Train", root / "test"
    for i in range(4):
        write(train / "Denoise" / f"{i:05d}.bmp", seed=i)
    for i in range(1, 4):
        write_pair(
            train / "Derain" / "rainy" / f"rain-{i}.png",
            train / "Derain" / "gt" / f"norain-{i}.png",
            seed=10 + i,
        )
    for scene in ("0025", "0039"):
        write(train / "Dehaze" / "original" / f"{scene}.png", seed=int(scene))
        for beta in ("0.1", "0.2"):
            write(
                train / "Dehaze" / "synthetic" / "part1" / f"{scene}_0.8_{beta}.jpg",
                seed=int(scene) + 1,
            )
    for i in range(2):
        write(test / "denoise" / "bsd68" / f"{i}.jpg", seed=20 + i, size=(33, 41))
    write_pair(
        test / "derain" / "Rain100L" / "input" / "1.png",
        test / "derain" / "Rain100L" / "target" / "1.png",
        30,
    )
    write(test / "dehaze" / "input" / "0001_0.8_0.2.jpg", 40)
    write(test / "dehaze" / "target" / "0001.png", 41)
    if five:
        for i in range(3):
            name = f"GOPR0372_07_00_{i:06d}.png"
            write_pair(
                train / "Deblur" / "blur" / name, train / "Deblur" / "sharp" / name, seed=50 + i
            )
            write_pair(
                train / "Enhance" / "low" / f"{i}.png",
                train / "Enhance" / "gt" / f"{i}.png",
                seed=60 + i,
            )
        write_pair(
            test / "deblur" / "gopro" / "input" / "a.png",
            test / "deblur" / "gopro" / "target" / "a.png",
            70,
        )
        write_pair(
            test / "enhance" / "lol" / "input" / "1.png",
            test / "enhance" / "lol" / "target" / "1.png",
            71,
        )


def test_three_task_training_set_uses_the_expansion_ratios(tmp_path: Path) -> None:
    make_task_tree(tmp_path, five=False)
    ds = build_dataset("three", tmp_path, split="train", crop=16, val_fraction=0.0)
    kinds = [ds.samples[i].kind for i in ds.index]
    assert kinds.count("noise_15") == kinds.count("noise_50") == 4 * EXPANSION_RATIOS["noise"]
    assert kinds.count("rain") == 3 * 120 and kinds.count("haze") == 4
    plain = build_dataset(
        "three", tmp_path, split="train", crop=16, val_fraction=0.0, expansion=False
    )
    assert len(plain) == 4 * 3 + 3 + 4
    fewer = build_dataset("three", tmp_path, crop=16, val_fraction=0.0, expansion={"rain": 2})
    assert [fewer.samples[i].kind for i in fewer.index].count("rain") == 3 * 2
    for typo in ({"noise_25": 1}, {"low-light": 50}):  # silently ignored before
        with pytest.raises(ValueError, match="expansion has no task"):
            build_dataset("three", tmp_path, val_fraction=0.0, expansion=typo)
    torch.manual_seed(0)
    rain = next(i for i in range(len(ds)) if ds.samples[ds.index[i]].kind == "rain")
    item = ds[rain]
    assert item["kind"] == "rain" and item["name"].startswith("rain-")
    assert_pairs_aligned(item)


def test_three_task_val_split_keeps_scenes_together(tmp_path: Path) -> None:
    make_task_tree(tmp_path, five=False)
    train = build_dataset("three", tmp_path, split="train", val_fraction=0.4, expansion=False)
    val = build_dataset("three", tmp_path, split="val", val_fraction=0.4)
    for source in ("BSD400+WED", "Rain100L", "RESIDE-OTS"):
        train_groups = {s.group for s in train.samples if s.source == source}
        val_groups = {s.group for s in val.samples if s.source == source}
        assert train_groups and val_groups and not train_groups & val_groups
    hazy_val = [s for s in val.samples if s.kind == "haze"]
    assert (
        len(hazy_val) == 2 and len({s.group for s in hazy_val}) == 1
    )  # both renderings of a scene
    assert len(val) == len(val.samples)  # no expansion on validation


def test_three_task_test_pairs(tmp_path: Path) -> None:
    make_task_tree(tmp_path, five=False)
    items = list(iter_test_pairs("three", tmp_path))
    summary = sorted((it["dataset"], it["kind"]) for it in items)
    assert summary == sorted(
        [("CBSD68", f"noise_{s}") for s in (15, 25, 50) for _ in range(2)]
        + [("Rain100L", "rain"), ("SOTS-outdoor", "haze")]
    )
    noisy = [it for it in items if it["dataset"] == "CBSD68"]
    assert all(it["lq"].shape == it["gt"].shape == (3, 33, 41) for it in noisy)
    again = [it for it in iter_test_pairs("three", tmp_path, kinds=["noise_50"])]
    fixed = {it["name"]: it["lq"] for it in noisy if it["kind"] == "noise_50"}
    assert all(torch.equal(fixed[it["name"]], it["lq"]) for it in again)
    sots = next(it for it in items if it["dataset"] == "SOTS-outdoor")
    assert sots["name"] == "0001_0.8_0.2"
    assert torch.allclose(
        sots["gt"], load_image(tmp_path / "test" / "dehaze" / "target" / "0001.png")
    )


def test_five_task_adds_deblur_and_low_light(tmp_path: Path) -> None:
    make_task_tree(tmp_path, five=True)
    ds = build_dataset("five", tmp_path, split="train", val_fraction=0.0)
    kinds = [ds.samples[i].kind for i in ds.index]
    assert kinds.count("blur") == 3 * 5 and kinds.count("low_light") == 3 * 200
    tests = list(iter_test_pairs("five", tmp_path))
    assert sorted({(it["dataset"], it["kind"]) for it in tests}) == [
        ("CBSD68", "noise_25"),
        ("GoPro", "blur"),
        ("LOL-v1", "low_light"),
        ("Rain100L", "rain"),
        ("SOTS-outdoor", "haze"),
    ]
    three = build_dataset("three", tmp_path, val_fraction=0.0, expansion=False)
    assert {three.samples[i].kind for i in three.index} == {
        "noise_15",
        "noise_25",
        "noise_50",
        "rain",
        "haze",
    }
    with pytest.raises(
        DataError,
        match=r"five layout: the data root \S*nowhere does not exist.*Deblur/\{blur,sharp\}",
    ) as err:
        build_dataset("five", tmp_path / "nowhere")
    assert "\n" not in str(err.value)  # the CLI prints it as one line


def test_malformed_task_roots_name_the_layout(tmp_path: Path) -> None:
    make_task_tree(tmp_path, five=False)
    with pytest.raises(
        DataError, match=r"five layout: missing folder 'Train/Deblur'.*Deblur/\{blur,sharp\}"
    ):
        build_dataset("five", tmp_path)
    with pytest.raises(DataError, match="three layout: missing folder 'Train'"):
        build_dataset("three", tmp_path / "test")
    for path in (tmp_path / "Train" / "Derain" / "gt").iterdir():
        path.rename(path.with_name("other-" + path.name))
    with pytest.raises(DataError, match="no file in 'Train/Derain/rainy' matches"):
        build_dataset("three", tmp_path)
    with pytest.raises(ValueError, match="blur"):
        build_dataset("three", tmp_path, kinds=["blur"])


def test_cdd11_layout(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for i in range(4):
            name = f"{i:06d}.png"
            write(tmp_path / split / "clear" / name, seed=i)
            for folder in CDD11_FOLDERS:
                write(tmp_path / split / folder / name, seed=100 + i)
    train = build_dataset("cdd11", tmp_path, split="train", val_fraction=0.25, crop=16)
    val = build_dataset("cdd11", tmp_path, split="val", val_fraction=0.25, crop=16)
    assert len(val) == 11 and len(train) == 33  # one scene of four, in all 11 versions
    assert not {s.name for s in train.samples} & {s.name for s in val.samples}
    tests = list(iter_test_pairs("cdd11", tmp_path, kinds=["L+H", "haze+rain"]))
    assert sorted({it["kind"] for it in tests}) == ["H+R", "L+H"] and len(tests) == 8
    assert all(it["dataset"] == "CDD-11" and it["gt"].shape == (3, 40, 48) for it in tests)
    (tmp_path / "test" / "clear").rename(tmp_path / "test" / "gt")
    with pytest.raises(
        DataError, match=r"cdd11 layout: missing folder 'test/clear'.*low_haze_snow"
    ):
        build_dataset("cdd11", tmp_path, split="test")


def test_unknown_layout_and_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="paired, synthetic, three, five, cdd11"):
        build_dataset("four", tmp_path)
    with pytest.raises(ValueError):
        build_dataset("synthetic", tmp_path, split="validation")  # type: ignore[arg-type]


def test_pale_scenes_brighten_targets_of_kinds_without_haze_but_keep_black(
    tmp_path: Path,
) -> None:
    # a flat mid-grey photo: a high-key tone curve x ** g, g in 0.35-0.7
    for i in range(4):
        write(tmp_path / f"grey{i}.png", size=(32, 32), value=102)
    kinds = {"blur": 1.0, "clean": 1.0, "haze": 1.0, "H+S": 1.0, "low_light": 1.0}
    common = {"split": "train", "crop": 16, "val_fraction": 0.0, "kinds": kinds}
    grey = 102 / 255
    lo, hi = grey**0.7, grey**0.35
    pale = _clean_crop_means(build_dataset("synthetic", tmp_path, pale_scenes=1.0, **common), 150)
    for kind in ("blur", "clean", "low_light"):  # brightened, by varying amounts
        assert pale[kind] and all(lo - 1e-6 <= m <= hi + 1e-6 for m in pale[kind])
        assert len({round(m, 3) for m in pale[kind]}) > 3
    for kind in ("haze", "H+S"):  # the target of a dehazing kind stays as it was
        assert pale[kind] and all(m == pytest.approx(grey, abs=1e-6) for m in pale[kind])
    half = _clean_crop_means(build_dataset("synthetic", tmp_path, pale_scenes=0.5, **common), 150)
    share = sum(m > grey + 0.01 for m in half["clean"]) / len(half["clean"])
    assert 0.2 < share < 0.8
    item = _scene_option_keeps_identity_and_validation(tmp_path, common, "pale_scenes", grey)
    assert float(item["gt"].mean()) > grey + 0.01
    with pytest.raises(ValueError, match="probability"):
        build_dataset("synthetic", tmp_path, pale_scenes=-0.1)
    # unlike haze, the tone curve leaves black black: that is what tells the two apart
    black = tmp_path / "black"
    for i in range(4):
        write(black / f"b{i}.png", size=(32, 32), value=0)
    ds = build_dataset("synthetic", black, pale_scenes=1.0, **{**common, "kinds": ["clean"]})
    assert len(ds) >= 4 and all(float(ds[i]["gt"].max()) == 0.0 for i in range(len(ds)))


# --- pairing problems: reported in training, refused in a test --------------------------------


def test_a_degraded_image_without_its_clean_one_is_left_out_of_training_but_stops_a_test(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(4):
        write_pair(tmp_path / "lq" / f"img{i}.png", tmp_path / "gt" / f"img{i}.png", seed=i)
    write(tmp_path / "lq" / "orphan.png", 99)
    with caplog.at_level("WARNING", logger="anyrestore"):
        ds = build_dataset("paired", tmp_path, split="train", val_fraction=0.0)
    assert len(ds) == 4
    assert "1 images in 'lq' have no clean match in 'gt' (orphan.png); left out" in caplog.text
    with pytest.raises(DataError, match="orphan.png.*a benchmark scores every image"):
        build_dataset("paired", tmp_path, split="test")


def test_two_degraded_images_of_one_name_stop_a_test(tmp_path: Path) -> None:
    write_pair(tmp_path / "lq" / "a.png", tmp_path / "gt" / "a.png", seed=1)
    write(tmp_path / "lq" / "a.jpg", 2)  # the same picture saved twice would be scored twice
    with pytest.raises(DataError, match="share a name .*a.jpg and a.png"):
        build_dataset("paired", tmp_path, split="test")


def test_hazy_scenes_pair_within_their_folder(tmp_path: Path) -> None:
    test = tmp_path / "test" / "dehaze"
    for i, where in enumerate(("indoor", "outdoor")):
        write_pair(
            test / "input" / where / "1401_0.8_0.2.jpg", test / "target" / where / "1401.png", i
        )
    pairs = {
        s.lq.relative_to(test).as_posix(): s.gt.relative_to(test).as_posix()
        for s in build_dataset("three", tmp_path, split="test", kinds=["haze"]).samples
    }
    assert pairs == {
        "input/indoor/1401_0.8_0.2.jpg": "target/indoor/1401.png",
        "input/outdoor/1401_0.8_0.2.jpg": "target/outdoor/1401.png",
    }


def test_a_hazy_image_matching_two_clear_scenes_stops_a_test(tmp_path: Path) -> None:
    test = tmp_path / "test" / "dehaze"
    write(test / "input" / "1401_0.8_0.2.jpg", 1)
    for where in ("indoor", "outdoor"):
        write(test / "target" / f"1401{'.png' if where == 'indoor' else '.jpg'}", 2)
    with pytest.raises(DataError, match="match more than one clean image"):
        build_dataset("three", tmp_path, split="test", kinds=["haze"])


def test_three_clean_images_of_one_name_are_reported_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path / "lq" / "a.png", 1)
    for suffix in (".png", ".jpg", ".bmp"):  # a third one popped the key a second time
        write((tmp_path / "gt" / "a").with_suffix(suffix), 2)
    with pytest.raises(DataError, match="match more than one clean image"):
        build_dataset("paired", tmp_path, split="test")


@pytest.mark.parametrize("split", ["train", "test"])
def test_pairs_of_different_pictures_by_size_are_refused_in_a_test(
    tmp_path: Path, split: str, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "lq" / "a.png", 1, size=(32, 32))
    write(tmp_path / "gt" / "a.png", 2, size=(64, 64))
    write_pair(tmp_path / "lq" / "b.png", tmp_path / "gt" / "b.png", seed=3, size=(60, 64))
    write(tmp_path / "lq" / "c.png", 4, size=(460, 620))  # SOTS-indoor: a 10 px border
    write(tmp_path / "gt" / "c.png", 5, size=(480, 640))
    if split == "test":  # found from the headers, before any model runs or image is read
        said = r"a.png and its clean image .* differ in size \(32x32 against 64x64\)"
        with pytest.raises(DataError, match=said):
            build_dataset("paired", tmp_path, split=split)
        (tmp_path / "lq" / "a.png").unlink()
        ds = build_dataset("paired", tmp_path, split=split)
        assert ds[1]["lq"].shape == (3, 460, 620)  # a border is cropped away, as before
        return
    ds = build_dataset("paired", tmp_path, split=split, crop=16, val_fraction=0.0)
    with caplog.at_level("WARNING", logger="anyrestore"):
        assert ds[0]["name"] == "b"  # the next pair stands in, as for an unreadable file
    assert "differ in size" in caplog.text


def test_a_clean_only_test_folder_with_subfolders_is_refused(tmp_path: Path) -> None:
    bsd68 = tmp_path / "test" / "denoise" / "bsd68"
    for sub in ("original_png", "noisy25"):
        write(bsd68 / sub / "1.png", 1)
    with pytest.raises(DataError, match=r"clean images only.*\(noisy25/, original_png/\)"):
        build_dataset("three", tmp_path, split="test", kinds=["noise_25"])


def test_two_clean_images_of_one_name_in_a_clean_only_test_folder_are_refused(
    tmp_path: Path,
) -> None:
    bsd68 = tmp_path / "test" / "denoise" / "bsd68"
    write(bsd68 / "0001.png", 1)
    write(bsd68 / "0001.jpg", 1)  # a conversion left behind: scored twice with one noise
    write(bsd68 / "0002.png", 2)
    with pytest.raises(DataError, match=r"share a name \(0001.jpg and 0001.png\)"):
        build_dataset("three", tmp_path, split="test", kinds=["noise_25"])


def test_a_test_set_missing_some_degraded_images_says_what_its_scores_leave_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An interrupted copy: 2 of 5 rainy images. The clean ones nothing pairs with would
    # otherwise vanish from the average without a word.
    for i in range(5):
        write(tmp_path / "gt" / f"img{i}.png", i)
    for i in range(2):
        write(tmp_path / "lq" / f"img{i}.png", 10 + i)
    with caplog.at_level("WARNING", logger="anyrestore"):
        ds = build_dataset("paired", tmp_path, split="test")
    assert len(ds) == 2
    assert "3 clean images in 'gt' have no degraded image in 'lq'" in caplog.text
    assert "img2.png" in caplog.text and "the scores leave them out" in caplog.text


def test_video_frames_of_one_sequence_stay_on_one_side_of_the_split(tmp_path: Path) -> None:
    deblur = tmp_path / "Train" / "Deblur"
    for seq in range(6):
        for frame in range(3):
            name = f"GOPR03{seq}0_07_00_{frame:06d}.png"
            write_pair(deblur / "blur" / name, deblur / "sharp" / name, seed=seq * 10 + frame)
    kinds = ["blur"]
    train = build_dataset("five", tmp_path, split="train", kinds=kinds, val_fraction=0.34)
    val = build_dataset("five", tmp_path, split="val", kinds=kinds, val_fraction=0.34)
    sequences = lambda ds: {s.name.rsplit("_", 1)[0] for s in ds.samples}  # noqa: E731
    assert len(val.samples) == 6 and not sequences(train) & sequences(val)
    # Restormer's and NAFNet's copies of GoPro name frames SEQ-000047: one sequence too.
    assert video_sequence(PurePath("GOPR0372_07_00-000047.png")) == "GOPR0372_07_00"
    assert video_sequence(PurePath("GOPR0372_07_00_000047.png")) == "GOPR0372_07_00"


def test_the_split_of_a_folder_does_not_depend_on_how_its_path_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(12):
        write(tmp_path / "photos" / f"p{i}.png", seed=i)
    named = build_dataset("synthetic", tmp_path / "photos", split="val", val_fraction=0.25)
    monkeypatch.chdir(tmp_path / "photos")
    here = build_dataset("synthetic", Path("."), split="val", val_fraction=0.25)
    assert [s.name for s in here.samples] == [s.name for s in named.samples]


def test_a_16_bit_grey_photo_keeps_its_values_when_downscaled(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 120 * 100).reshape(100, 120).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    full = load_image(tmp_path / "grey16.png")
    small = load_image(tmp_path / "grey16.png", max_side=60)
    assert full.shape == (3, 100, 120) and small.shape == (3, 50, 60)
    assert abs(float(small.mean()) - float(full.mean())) < 0.01  # not clipped to white
    assert torch.equal(small[0], small[2])


def test_a_float_tiff_is_read_as_its_values_not_black(tmp_path: Path) -> None:
    # Pillow's convert("RGB") turns mode F (32-bit float TIFF) into black: training would
    # learn black targets, and a test would score black against black.
    ramp = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40)
    Image.fromarray(ramp, "F").save(tmp_path / "float.tif")
    image = load_image(tmp_path / "float.tif")
    assert image.shape == (3, 30, 40)
    assert torch.allclose(image[1], torch.from_numpy(ramp), atol=1e-6)
    Image.fromarray(ramp * 255, "F").save(tmp_path / "scaled.tif")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(tmp_path / "scaled.tif")


def test_photos_a_dataset_cannot_read_are_named_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from anyrestore.data.imagefiles import list_images

    write(tmp_path / "photos" / "a.png", 1)
    (tmp_path / "photos" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    with caplog.at_level("WARNING", logger="anyrestore"):
        found = list_images(tmp_path / "photos")
    assert found == [tmp_path / "photos" / "a.png"]
    assert "1 files in" in caplog.text and ".heic" in caplog.text


def test_a_scene_s_other_scales_and_views_stay_on_one_side_of_the_split(tmp_path: Path) -> None:
    for i in range(10):  # the corpus names a photo's scaled copies name__s100, __s050, ...
        for scale in ("s100", "s050", "s025"):
            write(tmp_path / "train" / f"photo{i}__{scale}.png", seed=i)
    for view in ("L", "R"):  # a stereo pair: two files, one scene, told by the manifest
        write(tmp_path / "train" / f"aloe{view}__s100.png", seed=20)
    (tmp_path / "manifest.csv").write_text(
        "file,split,group\ntrain/aloeL__s100.png,train,aloe\ntrain/aloeR__s100.png,train,aloe\n"
    )

    def scene(name: str) -> str:
        return "aloe" if name.startswith("aloe") else name.split("__")[0]

    versions = {f"photo{i}": 3 for i in range(10)} | {"aloe": 2}
    for split_seed in range(8):
        val = build_dataset(
            "synthetic", tmp_path / "train", split="val", val_fraction=0.3, split_seed=split_seed
        )
        held = [scene(s.name) for s in val.samples]
        assert held and all(held.count(x) == versions[x] for x in held), (split_seed, held)
