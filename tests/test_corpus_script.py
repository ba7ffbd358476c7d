"""Tests of scripts/build_corpus.py: the photo filter, the split rule and a small end-to-end build."""

from __future__ import annotations

import csv
import functools
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_corpus as bc  # noqa: E402
import corpus_filter as cf  # noqa: E402
import corpus_sources as cs  # noqa: E402


def natural_texture(seed: int, h: int = 384, w: int = 512) -> np.ndarray:
    """Smooth colour fields plus texture and sensor-like noise: statistically photo-like."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    img = rng.uniform(80, 170, 3).astype(np.float32)
    for _ in range(3):
        fx, fy, amp = rng.uniform(0.5, 12, 3), rng.uniform(0.5, 12, 3), rng.uniform(10, 40, 3)
        img = img + amp * np.sin(2 * np.pi * fx * x) * np.cos(2 * np.pi * fy * y)
    img = img + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def logo_like(h: int = 512, w: int = 512) -> np.ndarray:
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse((60, 60, 260, 260), fill=(220, 30, 40))
    draw.rectangle((280, 100, 460, 400), fill=(20, 60, 200))
    draw.polygon([(100, 450), (250, 300), (400, 470)], fill=(10, 10, 10))
    return np.asarray(img)


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- filter


def test_noisy_natural_texture_is_kept():
    assert bc.filter_image(natural_texture(0)) is None


def test_flat_logo_is_dropped_for_few_colours():
    reason = bc.filter_image(logo_like())
    assert reason is not None and reason.startswith("few colours")


def test_grayscale_photo_is_dropped_even_with_slight_chroma_noise():
    gray = natural_texture(1).mean(axis=2, keepdims=True).repeat(3, axis=2)
    gray += np.random.default_rng(2).integers(-2, 3, gray.shape)
    reason = bc.filter_image(np.clip(gray, 0, 255).astype(np.uint8))
    assert reason is not None and reason.startswith("grayscale")


def test_smooth_gradient_render_is_dropped():
    t = np.linspace(0, 1, 640)[None, :, None]
    render = (np.array([30, 80, 200]) * (1 - t) + np.array([250, 120, 60]) * t).repeat(400, 0)
    assert bc.filter_image(render.astype(np.uint8)) is not None


def test_tiny_image_is_dropped():
    reason = bc.filter_image(natural_texture(3, h=200, w=600))
    assert reason is not None and reason.startswith("tiny")


def test_flat_regions_rule_catches_vector_art_with_many_colours():
    # Large exactly-flat areas with a noisy strip: many colours, but most pixels flat.
    img = np.full((400, 600, 3), (40, 120, 200), np.uint8)
    img[:, :150] = natural_texture(4, h=400, w=150)
    stats = bc.photo_stats(img)
    assert stats["unique_ratio"] > cf.MIN_UNIQUE_RATIO
    assert bc.non_photo_reason(stats).startswith("large flat regions")


def test_alpha_used_as_mask_is_dropped_but_opaque_alpha_is_not():
    rgba = np.dstack([natural_texture(5), np.full((384, 512), 255, np.uint8)])
    rgb, reason, _ = bc.load_rgb(encode(rgba))
    assert reason is None and rgb.shape == (384, 512, 3)
    rgba[:, :256, 3] = 0
    rgb, reason, _ = bc.load_rgb(encode(rgba))
    assert rgb is None and reason == "alpha channel used as a mask"


def test_jpeg_quality_is_estimated_and_low_quality_is_stored_at_half_size():
    texture = natural_texture(6)
    _, _, q75 = bc.load_rgb(encode(texture, "JPEG", quality=75))
    _, _, q95 = bc.load_rgb(encode(texture, "JPEG", quality=95))
    _, _, qpng = bc.load_rgb(encode(texture))
    assert abs(q75 - 75) < 1.5 and abs(q95 - 95) < 1.5 and qpng is None
    assert cf.base_size(1000, 800, q75) == (500, 400)
    assert cf.base_size(1000, 800, q95) == (1000, 800)
    assert cf.base_size(5120, 2880, None) == (2048, 1152)


def test_scales_keep_only_copies_large_enough_for_crops():
    assert [s for s, _, _ in bc.scales_for(2048, 1152)] == [1.0, 0.5, 0.25]
    assert [s for s, _, _ in bc.scales_for(600, 400)] == [1.0, 0.5]


def test_known_non_photos_and_samples_are_dropped_by_name():
    cv = "usr/share/doc/opencv-doc/examples/data/"
    assert bc.name_reason("opencv-doc", cv + "left01.jpg") == "non-photo by name"
    assert bc.name_reason("opencv-doc", cv + "pic3.png") == "non-photo by name"
    assert bc.name_reason("opencv-doc", cv + "fruits.jpg") is None
    assert "sample" in bc.name_reason("scikit-image", "skimage/data/astronaut.png", "public-domain")
    kde = "usr/share/wallpapers/Opal/contents/images/3840x2160.png"
    assert bc.name_reason("plasma-workspace-wallpapers", kde).startswith("excluded after review")
    assert bc.name_reason("scikit-image", "skimage/data/moon.png", "unstated") is not None


# ---------------------------------------------------------------- grouping and split


def test_stereo_pairs_and_variants_share_a_group_distinct_photos_do_not():
    cv = "usr/share/doc/opencv-doc/examples/data/"
    assert bc.group_of("opencv-doc", cv + "aloeL.jpg") == bc.group_of(
        "opencv-doc", cv + "aloeR.jpg"
    )
    assert bc.group_of("scikit-image", "skimage/data/motorcycle_left.png") == bc.group_of(
        "scikit-image", "skimage/data/motorcycle_right.png"
    )
    kde = "usr/share/wallpapers/Path/contents/"
    src = "plasma-workspace-wallpapers"
    assert bc.group_of(src, kde + "images/2560x1600.jpg") == bc.group_of(
        src, kde + "screenshot.jpg"
    )
    assert bc.group_of("opencv-doc", cv + "apple.jpg") != bc.group_of(
        "opencv-doc", cv + "orange.jpg"
    )
    # Names that are nothing but the view: stripping left nothing, so each kept its own group
    # and a build could put the two views of one scene on both sides of the split.
    assert bc.group_of("opencv-doc", cv + "left.jpg") == bc.group_of("opencv-doc", cv + "right.jpg")
    assert bc.group_of("opencv-doc", cv + "left.jpg") != bc.group_of("opencv-doc", "x/left.jpg")
    assert bc.group_of("opencv-doc", cv + "1.jpg") != bc.group_of("opencv-doc", cv + "2.jpg")


@pytest.mark.parametrize("n", [3, 7, 20, 60, 200])
def test_split_is_deterministic_and_holds_out_enough(n):
    groups = {f"src:photo{i}": 1 + i % 3 for i in range(n)}
    split = bc.assign_splits(groups)
    assert set(split) == set(groups) and set(split.values()) <= {"train", "val"}
    reversed_order = dict(reversed(list(groups.items())))
    assert bc.assign_splits(reversed_order) == split
    val = sum(n_ for g, n_ in groups.items() if split[g] == "val")
    assert val >= 0.15 * sum(groups.values())
    assert "train" in split.values()


def test_adding_a_photo_keeps_existing_hash_assignments_when_no_top_up_is_needed():
    groups = {f"src:photo{i}": 1 for i in range(200)}
    before = bc.assign_splits(groups)
    after = bc.assign_splits({**groups, "src:new": 1})
    assert all(after[g] == before[g] for g in groups)


def test_pinned_val_groups_stay_held_out_when_the_corpus_grows():
    small = {f"src:photo{i}": 1 for i in range(5)}
    pinned = frozenset({"src:photo0"})
    assert bc.assign_splits(small, pinned_val=pinned)["src:photo0"] == "val"
    grown = {**small, **{f"new:photo{i}": 1 for i in range(100)}}
    assert bc.assign_splits(grown, pinned_val=pinned)["src:photo0"] == "val"
    # the pins are groups of the corpus that earlier training runs held out
    # (all seven: dropping one would move photos earlier runs were scored on into training)
    assert all(":" in g for g in bc.PINNED_VAL) and len(bc.PINNED_VAL) == 7


# ---------------------------------------------------------------- license parsing


def test_sporco_readme_gives_each_image_its_statement():
    readme = (
        "Test Images\n===========\n\nAll images in this directory are believed to be free.\n\n"
        "* ``barbara.png`` : Downloaded from somewhere.\n\n"
        "* ``kodim23.png`` : Kodak images appear to have been released for unrestricted use.\n\n"
        "* ``monarch.png``, ``sail.png`` : considered to be free of copyright\n"
        "  restrictions (see the readme).\n"
    )
    lic = cs.sporco_licenses(readme)
    assert lic["kodim23.png"][0] == "unrestricted-use"
    assert lic["monarch.png"][0] == lic["sail.png"][0] == "no-known-copyright-restrictions"
    assert lic["barbara.png"][0] == "believed-public-domain-or-redistributable"
    assert lic["sail.png"][1].startswith("All images in this directory")


def test_dep5_last_matching_stanza_gives_the_license():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n\n"
        "Files: 20.04/Bird_by_Ann.jpg\n       20.04/Tree_*.jpg\n"
        "Copyright: 2021, Ann Example\nLicense: CC-BY-SA-4.0\n text of the license\n"
    )
    stanzas = cs.parse_dep5(text)
    bird = cs.match_dep5(stanzas, "20.04/Bird_by_Ann.jpg")
    assert (bird.license, bird.copyright) == ("CC-BY-SA-4.0", "2021, Ann Example")
    assert cs.match_dep5(stanzas, "20.04/Tree_1.jpg").license == "CC-BY-SA-4.0"
    assert cs.match_dep5(stanzas, "other.png").license == "GPL-2+"


def test_license_identifiers_from_free_text():
    assert cs.spdx_from_text("No copyright restrictions. CC0 by the photographer (X).") == "CC0-1.0"
    assert cs.spdx_from_text("[1] https://creativecommons.org/licenses/by/2.0/") == "CC-BY-2.0"
    assert cs.spdx_from_text("released into the public domain") == "public-domain"
    assert cs.spdx_from_text("Retina image in RGB.") == "unstated"


# ---------------------------------------------------------------- end to end


@functools.cache
def make_candidates() -> list[cs.Candidate]:
    def cand(path: str, rgb: np.ndarray, fmt: str = "PNG") -> cs.Candidate:
        data = encode(rgb, fmt, **({"quality": 97} if fmt == "JPEG" else {}))
        return cs.Candidate("testpkg", "1.0", path, "CC0-1.0", "test", "Someone", read=lambda: data)

    cands = [cand(f"photos/scene{i:02d}.png", natural_texture(10 + i, 420, 640)) for i in range(8)]
    cands.append(cand("photos/stereoL.jpg", natural_texture(30, 420, 640), "JPEG"))
    cands.append(cand("photos/stereoR.jpg", natural_texture(31, 420, 640), "JPEG"))
    cands.append(cand("photos/brand.png", logo_like()))
    cands.append(cand("photos/scan.png", natural_texture(40).mean(2).astype(np.uint8)))
    return cands


def read_manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_build_writes_disjoint_splits_with_all_scales_together(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    summary = bc.build(out, make_candidates())
    rows = read_manifest(out)
    kept_paths = {r["original_path"] for r in rows}
    assert len(kept_paths) == 10 and "photos/brand.png" not in kept_paths
    with open(out / "dropped.csv", newline="", encoding="utf-8") as f:
        dropped = {r["original_path"]: r["reason"] for r in csv.DictReader(f)}
    assert dropped["photos/brand.png"].startswith("few colours")
    assert dropped["photos/scan.png"].startswith("grayscale")

    split_of_photo: dict[str, set] = {}
    for r in rows:
        split_of_photo.setdefault(r["group"], set()).add(r["split"])
        f = out / r["file"]
        assert f.parent.name == r["split"]
        with Image.open(f) as im:
            assert im.mode == "RGB" and im.size == (int(r["width"]), int(r["height"]))
    assert all(len(s) == 1 for s in split_of_photo.values())  # no photo in both splits
    scales = {(r["original_path"], float(r["scale"])) for r in rows}
    assert ("photos/scene00.png", 1.0) in scales and ("photos/scene00.png", 0.5) in scales
    stereo = {r["split"] for r in rows if "stereo" in r["original_path"]}
    assert len(stereo) == 1
    val_photos = {r["original_path"] for r in rows if r["split"] == "val"}
    assert len(val_photos) >= 0.15 * len(kept_paths)
    assert summary["photos"]["testpkg"]["val"] == len(val_photos)

    # A rerun reproduces the same files, bytes and split.
    first = [(r["file"], r["sha256"]) for r in rows]
    bc.build(out, make_candidates())
    assert [(r["file"], r["sha256"]) for r in read_manifest(out)] == first
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.jpg"))
    assert on_disk == sorted(f for f, _ in first)


@pytest.mark.parametrize("served", [True, False])
def test_debian_packages_are_fetched_at_the_version_the_corpus_is_built_from(
    tmp_path, monkeypatch, served
):
    # A host whose apt serves another version would build other photos and another split.
    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "opencv-doc_4.10.0_all.deb").write_text("4.10.0")  # another version, cached
    asked = []

    class Done:
        def __init__(self, stdout: str = "", returncode: int = 0) -> None:
            self.stdout, self.returncode = stdout, returncode

    def run(cmd, cwd=None, **kwargs):
        if cmd[0] == "dpkg-deb":  # -f DEB Version
            return Done(Path(cmd[2]).read_text())
        if cmd[0] == "apt-get":
            asked.append(cmd[-1])
            name, version = cmd[-1].split("=")
            if served:
                (Path(cwd) / f"{name}_{version.replace(':', '%3a')}_all.deb").write_text(version)
            return Done(returncode=0 if served else 100)
        Path(cmd[3]).mkdir(parents=True, exist_ok=True)  # dpkg -x DEB TREE
        return Done()

    monkeypatch.setattr(cs.subprocess, "run", run)
    pinned = cs.DEBIAN_PACKAGES["opencv-doc"]
    if served:
        tree, version = cs.fetch_deb("opencv-doc", tmp_path)
        assert version == pinned and tree.name == f"opencv-doc_{pinned}"
        assert asked == [f"opencv-doc={pinned}"]
        assert cs.fetch_deb("opencv-doc", tmp_path)[1] == pinned and len(asked) == 1  # cached
    else:
        with pytest.raises(
            RuntimeError, match=rf"opencv-doc {re.escape(pinned)} .* could not be downloaded"
        ):
            cs.fetch_deb("opencv-doc", tmp_path)


def test_the_archive_is_the_same_bytes_whatever_the_files_modes(tmp_path):
    # Built under umask 002 on one host and 022 on another: the same archive.
    def archive(root: Path, mode: int) -> bytes:
        for name in ("manifest.csv", "dropped.csv", "train/a.jpg", "val/b.jpg"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
            (root / name).chmod(mode)
        bc.write_archive(root, root / "corpus.tar")
        return (root / "corpus.tar").read_bytes()

    assert archive(tmp_path / "a", 0o664) == archive(tmp_path / "b", 0o644)
