"""Build the clean-photo training corpus from images that package registries serve.

    python scripts/build_corpus.py --out corpus/ [--archive corpus/corpus.tar]

Writes OUT/train/*, OUT/val/* (RGB 8-bit, long side capped, several scales of each photo in
the split of its source), OUT/manifest.csv (one row per written file: split, source package,
original path, license, attribution, sha256, size, scale) and OUT/dropped.csv (every rejected
file with its reason). Sources, filter rules and the split rule: docs/corpus.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import re
import shutil
import sys
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_filter import (  # noqa: E402
    base_size,
    filter_image,
    load_rgb,
    non_photo_reason,
    photo_stats,
    resize,
    scales_for,
)
from corpus_sources import Candidate, all_candidates, log  # noqa: E402

__all__ = [
    "assign_splits",
    "build",
    "filter_image",
    "group_of",
    "load_rgb",
    "main",
    "name_reason",
    "non_photo_reason",
    "photo_stats",
    "scales_for",
]

VAL_FRACTION = 0.20  # target share of photos held out; hash-based, so it varies
MIN_VAL_FRACTION = 0.15  # topped up deterministically if the hash gives fewer
JPEG_QUALITY = 95  # of the stored files (4:4:4 chroma)
PLASMA = "plasma-workspace-wallpapers"

# Photos shipped in anyrestore/assets/samples/ (the bench's default images): never in the corpus.
SHIPPED_SAMPLES = {
    ("scikit-image", "skimage/data/astronaut.png"),
    ("scikit-image", "skimage/data/coffee.png"),
    ("scikit-image", "skimage/data/chelsea.png"),
    ("scikit-image", "skimage/data/rocket.jpg"),
}

# Known non-photos by file name (matched against the base name, case-insensitive).
NON_PHOTO_NAMES = re.compile(
    r"logo|text|letter|digits|chessboard|checkerboard|^(left|right)\d+\.|^pic\d|sudoku|notes"
    r"|gradient|mask|^te?mpl|phantom|^colou?r\.png$|horse|blob|ellipses|GT\.png$|screenshot"
    r"|^page\.png$|multipage|\.gif$",
    re.IGNORECASE,
)

# Looked at on a contact sheet after the automatic filter: not clean photographs. Keys are
# (package, path or folder inside it); wallpaper packages are mostly renders and illustrations.
_KDE = "usr/share/wallpapers/"
_CV = "usr/share/doc/opencv-doc/examples/data/"
REVIEWED_EXCLUDES: dict[tuple[str, str], str] = {
    **{
        ("plasma-workspace-wallpapers", _KDE + name): "render or illustration"
        for name in (
            "Altai",
            "Canopee",
            "Cascade",
            "Cluster",
            "Elarun",
            "Flow",
            "Honeywave",
            "IceCold",
            "Kay",
            "Kokkini",
            "MilkyWay",
            "Opal",
            "Patak",
            "SafeLanding",
            "Shell",
            "Volna",
        )
    },
    ("plasma-workspace-wallpapers", _KDE + "Autumn"): "digital painting",
    **{
        ("ukui-wallpapers", f"usr/share/backgrounds/{name}"): "render"
        for name in (
            "2004default.jpg",
            "fluent-color.png",
            "focal-ubuntukylin.png",
            "rhythm.jpg",
            "string.jpg",
        )
    },
    ("opencv-doc", _CV + "ml.png"): "illustration",
    ("opencv-doc", _CV + "starry_night.jpg"): "painting",
    ("opencv-doc", _CV + "licenseplate_motion.jpg"): "motion-blurred, not clean",
    ("opencv-doc", _CV + "ela_modified.jpg"): "tampered copy of ela_original.jpg",
    ("mahotas", "mahotas/demos/data/lena.jpg"): "Lena: rights never granted, subject asked "
    "for it to be retired",
    ("mahotas", "mahotas/demos/data/nuclear.png"): "fluorescence micrograph",
    ("mahotas", "mahotas/demos/data/DepartmentStore.jpg"): "illustration",
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg"): "render",
}

# Groups held out by an earlier corpus (2026-11, 41 photos) stay in val whatever is added, so a
# model trained on that corpus is never scored on a photo it saw. Path was a top-up group.
PINNED_VAL = frozenset(
    {
        "opencv-doc:usr/share/doc/opencv-doc/examples/data/messi",
        "opencv-doc:usr/share/doc/opencv-doc/examples/data/smarties",
        "plasma-workspace-wallpapers:EveningGlow",
        "plasma-workspace-wallpapers:Kite",
        "plasma-workspace-wallpapers:Path",
        "scikit-image:skimage/data/retina",
        "scikit-learn:sklearn/datasets/images/flower",
    }
)

# Photos are trusted only with a license statement; these skimage files have none.
REQUIRE_LICENSE = {"scikit-image"}


# ---------------------------------------------------------------- filtering


def name_reason(source: str, path: str, license_id: str = "") -> str | None:
    """Why a file is dropped before it is even decoded, or None."""
    if (source, path) in SHIPPED_SAMPLES:
        return "shipped as an anyrestore sample"
    for (src, prefix), why in REVIEWED_EXCLUDES.items():
        if src == source and (path == prefix or path.startswith(prefix + "/")):
            return "excluded after review: " + why
    if NON_PHOTO_NAMES.search(Path(path).name):
        return "non-photo by name"
    if source in REQUIRE_LICENSE and license_id == "unstated":
        return "no license statement"
    return None


# ---------------------------------------------------------------- grouping and split


def group_of(source: str, path: str) -> str:
    """Source identity of a photo: files of one scene (stereo pairs, variants) share it."""
    parts = path.split("/")
    if source == "plasma-workspace-wallpapers" and "wallpapers" in parts:
        return f"{source}:{parts[parts.index('wallpapers') + 1]}"
    stem = Path(path).stem
    while True:
        new = re.sub(r"(?i)_?(left|right|original|modified|in_scene)$", "", stem)
        new = re.sub(r"(\d+|[LRAB])$", "", new)
        if new == stem:
            break
        if not new:  # left.jpg and right.jpg: the two views of the folder's one scene
            stem = "(pair)" if re.fullmatch(r"(?i)left|right|[LR]", stem) else stem
            break
        stem = new
    return f"{source}:{'/'.join(parts[:-1])}/{stem.lower()}"


def group_hash(group: str) -> float:
    """A stable number in [0, 1) for a group."""
    return int(hashlib.sha256(group.encode()).hexdigest()[:12], 16) / 16**12


def assign_splits(
    photos_per_group: dict[str, int],
    val_fraction: float = VAL_FRACTION,
    min_val_fraction: float = MIN_VAL_FRACTION,
    pinned_val: frozenset[str] = PINNED_VAL,
) -> dict[str, str]:
    """Map each group to "train" or "val" by its hash; whole groups only.

    A group is val when it is in pinned_val or its hash is below val_fraction. If that holds out fewer than
    min_val_fraction of the photos, the train groups with the smallest hashes move to val
    until it does, so the split depends only on the set of groups.
    """
    order = sorted(photos_per_group, key=lambda g: (group_hash(g), g))
    split = {
        g: "val" if g in pinned_val or group_hash(g) < val_fraction else "train" for g in order
    }
    total = sum(photos_per_group.values())
    val = sum(n for g, n in photos_per_group.items() if split[g] == "val")
    for g in order:
        if val >= min_val_fraction * total:
            break
        if split[g] == "train":
            split[g] = "val"
            val += photos_per_group[g]
    return split


# ---------------------------------------------------------------- writing


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def file_stem(c: Candidate) -> str:
    short = hashlib.sha256(f"{c.source}:{c.path}".encode()).hexdigest()[:8]
    prefixes = r"usr/share/|skimage/data/|sklearn/datasets/images/|sporco/data/|mahotas/demos/data/"
    name = slug(re.sub(rf"^({prefixes}|matplotlib/mpl-data/sample_data/)", "", c.path))
    name = re.sub(r"^(doc-opencv-doc-examples-data-|wallpapers-|backgrounds-)", "", name)
    return f"{slug(c.source)}__{name[-60:]}__{short}"


def save_image(rgb: np.ndarray, path: Path, fmt: str) -> None:
    """Write atomically: a temp file in the same folder, then os.replace."""
    tmp = path.with_name(path.name + ".tmp")
    img = Image.fromarray(rgb)
    if fmt == "jpg":
        img.save(tmp, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
    else:
        img.save(tmp, "PNG", optimize=False, compress_level=6)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contact_sheet(items: list[tuple[str, Image.Image]], path: Path, cols: int = 8) -> None:
    """A labelled thumbnail grid for looking at what the filter kept or dropped."""
    cell_w, cell_h = 224, 150
    rows = max(1, math.ceil(len(items) / cols))
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, thumb) in enumerate(items):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        t = thumb.copy()
        t.thumbnail((cell_w - 8, cell_h - 22))
        sheet.paste(t, (x + 4, y + 4))
        draw.text((x + 4, y + cell_h - 16), label[:36], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def write_archive(out: Path, archive: Path) -> None:
    """A reproducible tar (sorted names; zeroed times and owners; fixed modes, whatever the
    umask) of train/, val/ and the CSVs."""
    tmp = archive.with_name(archive.name + ".tmp")
    names = ["manifest.csv", "dropped.csv"]
    for split in ("train", "val"):
        names += sorted(f"{split}/{p.name}" for p in (out / split).iterdir())

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for split in ("train", "val"):
            tar.add(out / split, arcname=f"corpus/{split}", recursive=False, filter=clean)
        for name in names:
            tar.add(out / name, arcname=f"corpus/{name}", filter=clean)
    os.replace(tmp, archive)


# ---------------------------------------------------------------- main


@dataclass
class Kept:
    """A photo that passed the filter, staged until the split is known."""

    candidate: Candidate
    group: str
    quality: float | None  # JPEG quality of the source file
    staged: list[tuple[float, Path, int, int, float]]  # scale, file, width, height, vs original
    thumb: Image.Image


def largest_variants(candidates: list[Candidate]) -> dict[str, str]:
    """KDE ships portrait and low-resolution copies of a wallpaper: its largest file per folder."""
    best: dict[str, tuple[int, str]] = {}
    for c in candidates:
        if c.source == PLASMA and "/images" in c.path:
            with Image.open(io.BytesIO(c.read())) as im:
                area = im.width * im.height
            folder = c.path.rsplit("/", 1)[0]
            if area > best.get(folder, (0, ""))[0]:
                best[folder] = (area, c.path)
    return {folder: path for folder, (_, path) in best.items()}


def thumbnail(rgb: np.ndarray) -> Image.Image:
    thumb = Image.fromarray(rgb)
    thumb.thumbnail((256, 256))
    return thumb


def short_name(c: Candidate) -> str:
    parts = c.path.split("/")
    if c.source == PLASMA and "wallpapers" in parts:
        return "/".join(parts[parts.index("wallpapers") + 1 :]).replace("contents/", "")
    return parts[-1]


def stage(c: Candidate, rgb: np.ndarray, quality: float | None, staging: Path, fmt: str) -> list:
    """Write every scale of one photo into the staging folder."""
    h, w = rgb.shape[:2]
    base = resize(rgb, base_size(w, h, quality))
    stem = file_stem(c)
    staged = []
    for s, sw, sh in scales_for(base.shape[1], base.shape[0]):
        f = staging / f"{stem}__s{round(s * 100):03d}.{fmt}"
        save_image(resize(base, (sw, sh)), f, fmt)
        staged.append((s, f, sw, sh, round(sw / w, 4)))
    return staged


def build(
    out: Path, candidates: Iterable[Candidate], fmt: str = "jpg", sheets: Path | None = None
) -> dict:
    """Filter, split and write the corpus; returns the summary that main prints."""
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    kept: list[Kept] = []
    dropped: list[tuple[str, str, str]] = []
    dropped_thumbs: list[tuple[str, Image.Image]] = []
    seen_pixels: dict[str, str] = {}
    candidates = list(candidates)
    largest = largest_variants(candidates)

    for c in candidates:
        folder = c.path.rsplit("/", 1)[0]
        rgb, quality, staged = None, None, []
        reason = name_reason(c.source, c.path, c.license)
        if reason is None and largest.get(folder, c.path) != c.path:
            reason = "smaller variant of " + largest[folder]
        if reason is None:
            rgb, reason, quality = load_rgb(c.read())
        if rgb is not None and reason is None:
            reason = filter_image(rgb)
        if rgb is not None and reason is None:
            digest = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
            if digest in seen_pixels:
                reason = "duplicate of " + seen_pixels[digest]
            seen_pixels.setdefault(digest, f"{c.source}:{c.path}")
        if rgb is not None and reason is None:
            staged = stage(c, rgb, quality, staging, fmt)
            if not staged:
                reason = f"tiny after halving a quality-{quality:.0f} JPEG"
        if reason is not None:
            dropped.append((c.source, c.path, reason))
            if rgb is not None and sheets is not None:
                dropped_thumbs.append((f"{short_name(c)} {reason}", thumbnail(rgb)))
            log(f"drop {c.source}:{c.path}: {reason}")
            continue
        assert rgb is not None
        kept.append(Kept(c, group_of(c.source, c.path), quality, staged, thumbnail(rgb)))
        log(f"keep {c.source}:{c.path}: {len(staged)} scales")

    split_of = assign_splits(dict(Counter(k.group for k in kept)))
    train = {k.group for k in kept if split_of[k.group] == "train"}
    val = {k.group for k in kept if split_of[k.group] == "val"}
    assert not train & val, "a source photo landed in both splits"

    # Swap the new train/val in for the old ones only once everything is staged.
    for split in ("train", "val"):
        shutil.rmtree(out / split, ignore_errors=True)
        (out / split).mkdir()
    rows = []
    for k in sorted(kept, key=lambda k: (k.candidate.source, k.candidate.path)):
        split = split_of[k.group]
        for s, f, sw, sh, vs_original in k.staged:
            dest = out / split / f.name
            os.replace(f, dest)
            rows.append(
                {
                    "file": f"{split}/{dest.name}",
                    "split": split,
                    "source": k.candidate.source,
                    "source_version": k.candidate.version,
                    "original_path": k.candidate.path,
                    "group": k.group,
                    "license": k.candidate.license,
                    "license_source": k.candidate.license_source,
                    "attribution": k.candidate.attribution,
                    "sha256": sha256_file(dest),
                    "width": sw,
                    "height": sh,
                    "scale": s,
                    "scale_vs_original": vs_original,
                    "source_jpeg_quality": "" if k.quality is None else round(k.quality),
                }
            )
    shutil.rmtree(staging)
    write_csv(out / "manifest.csv", rows)
    write_csv(
        out / "dropped.csv", [{"source": s, "original_path": p, "reason": r} for s, p, r in dropped]
    )
    if sheets is not None:
        contact_sheet(
            [(f"{split_of[k.group]} {short_name(k.candidate)}", k.thumb) for k in kept],
            sheets / "kept.png",
        )
        contact_sheet(dropped_thumbs, sheets / "dropped.png")
    return summarize(kept, dropped, split_of, rows, out)


def write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def summarize(kept: list[Kept], dropped: list, split_of: dict, rows: list[dict], out: Path) -> dict:
    photos: dict[str, Counter] = defaultdict(Counter)
    files: dict[str, Counter] = defaultdict(Counter)
    for k in kept:
        photos[k.candidate.source][split_of[k.group]] += 1
    for r in rows:
        files[r["source"]][r["split"]] += 1
    reasons = Counter(re.sub(r"\s*(\(.*|:.*| of .*|after halving.*)", "", r) for _, _, r in dropped)
    size = sum(f.stat().st_size for split in ("train", "val") for f in (out / split).iterdir())
    return {
        "photos": photos,
        "files": files,
        "dropped": Counter(s for s, _, _ in dropped),
        "reasons": reasons,
        "bytes": size,
    }


def print_summary(summary: dict) -> None:
    print(f"{'source':30s} {'photos train/val':>17s} {'files train/val':>16s} {'dropped':>8s}")
    total: Counter = Counter()
    for s in sorted(set(summary["photos"]) | set(summary["dropped"])):
        p, f, d = summary["photos"][s], summary["files"][s], summary["dropped"][s]
        print(f"{s:30s} {p['train']:>9d}/{p['val']:<7d} {f['train']:>8d}/{f['val']:<7d} {d:>8d}")
        total.update({"pt": p["train"], "pv": p["val"], "ft": f["train"], "fv": f["val"], "d": d})
    print(
        f"{'total':30s} {total['pt']:>9d}/{total['pv']:<7d} {total['ft']:>8d}/{total['fv']:<7d} "
        f"{total['d']:>8d}"
    )
    share = total["pv"] / max(1, total["pt"] + total["pv"])
    print(f"val share of photos: {share:.1%}; size on disk: {summary['bytes'] / 2**20:.1f} MiB")
    print(
        "dropped by reason: " + ", ".join(f"{r}: {n}" for r, n in summary["reasons"].most_common())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("corpus"), help="output folder")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "anyrestore" / "corpus-sources",
        help="where downloaded wheels and .debs are kept between runs",
    )
    parser.add_argument(
        "--format",
        choices=("jpg", "png"),
        default="jpg",
        help=f"jpg (quality {JPEG_QUALITY}, 4:4:4) or lossless png",
    )
    parser.add_argument("--archive", type=Path, help="also write a tar of the corpus here")
    parser.add_argument(
        "--contact-sheets",
        type=Path,
        help="write kept.png and dropped.png thumbnail grids into this folder",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = build(args.out, all_candidates(args.cache), args.format, args.contact_sheets)
    print_summary(summary)
    if args.archive:
        write_archive(args.out, args.archive)
        print(f"archive: {args.archive} {args.archive.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
