"""The papers' dataset folder layouts, turned into lists of samples (see docs/datasets.md).

Three-task (N+H+R) and five-task (N+H+R+B+L) settings follow the PromptIR / AdaIR trees that
AnyIR (App. A.1) and ClusIR (Sec. 4.1, supp. 6.1) train and test on; CDD-11 follows OneRestore.
Folder names are matched case-insensitively. Nothing here reads pixels.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from anyrestore.data.degradations import CDD11, canonical_kind
from anyrestore.data.imagefiles import list_images
from anyrestore.errors import DataError

log = logging.getLogger("anyrestore")

# Data expansion ratios of ClusIR Sec. 4.1 (after AdaIR): how many times each training image
# is repeated per epoch; noise counts per sigma. Dehazing (72k OTS images) is not repeated.
EXPANSION_RATIOS: dict[str, int] = {"noise": 3, "rain": 120, "blur": 5, "low_light": 200, "haze": 1}

THREE_KINDS: tuple[str, ...] = ("noise_15", "noise_25", "noise_50", "rain", "haze")
FIVE_KINDS: tuple[str, ...] = THREE_KINDS + ("blur", "low_light")
# The five-task setting reports denoising at sigma 25 only (AnyIR App. A.1).
FIVE_TEST_KINDS: tuple[str, ...] = ("noise_25", "rain", "haze", "blur", "low_light")

# CDD-11 folder name -> label; "clear" holds the ground truth.
CDD11_FOLDERS: dict[str, str] = {
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

# One-line trees for error messages; docs/datasets.md draws them in full.
TREES: dict[str, str] = {
    "paired": "ROOT/{lq,gt}/ (or {input,target}/ or {degraded,clean}/) with matching file names",
    "synthetic": "ROOT/ holding clean photos (any depth)",
    "three": (
        "ROOT/Train/{Denoise/, Derain/{rainy,gt}/, Dehaze/{synthetic,original}/} and "
        "ROOT/test/{denoise/bsd68/, derain/Rain100L/{input,target}/, dehaze/{input,target}/}"
    ),
    "five": (
        "ROOT/Train/{Denoise/, Derain/{rainy,gt}/, Dehaze/{synthetic,original}/, "
        "Deblur/{blur,sharp}/, Enhance/{low,gt}/} and ROOT/test/{denoise/bsd68/, "
        "derain/Rain100L/{input,target}/, dehaze/{input,target}/, deblur/gopro/{input,target}/, "
        "enhance/lol/{input,target}/}"
    ),
    "cdd11": "ROOT/{train,test}/{clear, low, haze, rain, snow, low_haze, low_rain, low_snow, "
    "haze_rain, haze_snow, low_haze_rain, low_haze_snow}/ with the same file names",
}
LAYOUTS: tuple[str, ...] = tuple(TREES)


@dataclass(frozen=True)
class Sample:
    """One training or test image: its clean file, its degraded file (or None: synthesise)."""

    kind: str | None  # None: drawn from the dataset's mix of kinds (synthetic layout)
    name: str  # path of the degraded (else clean) file relative to its folder, no suffix
    gt: Path
    lq: Path | None
    group: str  # the clean scene; the validation split never separates a group
    source: str  # the dataset it comes from, e.g. "Rain100L"


def layout_error(layout: str, root: Path, problem: str) -> DataError:
    return DataError(
        f"{layout} layout: {problem} under {root}; expected {TREES[layout]} (see docs/datasets.md)"
    )


def find_dir(parent: Path, *names: str) -> Path | None:
    """The first child folder of ``parent`` whose name matches one of ``names`` (any case)."""
    if not parent.is_dir():
        return None
    children = {p.name.lower(): p for p in sorted(parent.iterdir()) if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def require_dir(layout: str, root: Path, parent: Path, *names: str) -> Path:
    found = find_dir(parent, *names)
    if found is None:
        where = parent.relative_to(root).as_posix() if parent != root else ""
        shown = "/".join(filter(None, [where, names[0]]))
        raise layout_error(layout, root, f"missing folder {shown!r}")
    return found


def require_images(layout: str, root: Path, folder: Path) -> list[Path]:
    files = list_images(folder)
    if not files:
        raise layout_error(layout, root, f"no images in {folder.relative_to(root).as_posix()!r}")
    return files


# Pairing keys: how a degraded file's relative path names its clean counterpart.
Key = Callable[[PurePath], str]


def same_name(rel: PurePath) -> str:
    return rel.with_suffix("").as_posix()


_RAIN_PREFIX = re.compile(r"^(no)?rain[-_]", re.IGNORECASE)


def rain_name(rel: PurePath) -> str:
    """'rain-12', 'norain-12x2' (original RainTrainL) and '12' all pair with 'norain-12' / '12'."""
    stem = _RAIN_PREFIX.sub("", rel.stem)
    stem = re.sub(r"x2$", "", stem)
    return (rel.parent / stem).as_posix()


def hazy_scene(rel: PurePath) -> str:
    """RESIDE names hazy images SCENE_AIRLIGHT_BETA.jpg next to a clear SCENE.png; the folder
    counts too (indoor/1401 is not outdoor/1401)."""
    return (rel.parent / rel.stem.split("_")[0]).as_posix()


# A group: the clean scene whose versions the validation split keeps on one side.
Group = Callable[[PurePath], str]

# SEQ_000047 as GoPro ships it, SEQ-000047 as Restormer's and NAFNet's copies name frames.
_GOPRO_FRAME = re.compile(r"^(GOPR\d+_\d+_\d+)[_-]\d+$", re.IGNORECASE)


def same_scene(rel: PurePath) -> str:
    return rel.as_posix()


def video_sequence(rel: PurePath) -> str:
    """A GoPro frame's sequence: its folder (SEQ/000047.png), or the name without its frame
    number (SEQ_000047.png, as flattened copies name them); neighbouring frames are nearly
    the same picture, so a sequence is one scene."""
    if rel.parent != PurePath("."):
        return rel.parent.as_posix()
    found = _GOPRO_FRAME.match(rel.stem)
    return found.group(1) if found else rel.as_posix()


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:3])
    return f"{shown} and {len(items) - 3} more" if len(items) > 3 else shown


def match_pairs(
    layout: str,
    root: Path,
    lq_dir: Path,
    gt_dir: Path,
    lq_key: Key = same_name,
    gt_key: Key = same_name,
    *,
    strict: bool = False,
    nested_lq: bool = False,
) -> list[tuple[Path, Path, str]]:
    """(degraded, clean, name) for every degraded image whose key matches a clean image's key.

    ``nested_lq``: a degraded image in a subfolder may also pair with the clean image of its
    key at the top of the clean folder (RESIDE's training tree keeps hazy renderings in
    part1..part4 beside one folder of clear scenes). Degraded images without a clean match,
    and two clean images with one key, are reported and left out; with ``strict`` (test sets:
    a benchmark scores every image or none) they and two degraded images of one name (a.jpg
    and a.png) are a DataError instead.
    """
    where = f"{lq_dir.relative_to(root).as_posix()!r}"
    index: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    for path in require_images(layout, root, gt_dir):
        rel = path.relative_to(gt_dir)
        key = gt_key(rel)
        if key in clashes:  # a third (or later) clean image of one key
            clashes[key].append(rel.as_posix())
        elif key in index:
            clashes[key] = [index.pop(key).relative_to(gt_dir).as_posix(), rel.as_posix()]
        else:
            index[key] = path
    pairs: list[tuple[Path, Path, str]] = []
    missing: list[str] = []
    ambiguous: list[str] = []
    names: dict[str, str] = {}
    twins: list[str] = []
    for path in require_images(layout, root, lq_dir):
        rel = path.relative_to(lq_dir)
        key = lq_key(rel)
        if nested_lq and key not in index and key not in clashes:
            key = PurePath(key).name
        gt = index.get(key)
        if key in clashes:
            ambiguous.append(f"{rel.as_posix()}: {' or '.join(clashes[key])}")
            continue
        if gt is None:
            missing.append(rel.as_posix())
            continue
        name = rel.with_suffix("").as_posix()
        if name in names:
            twins.append(f"{names[name]} and {rel.as_posix()}")
        names[name] = rel.as_posix()
        pairs.append((path, gt, name))
    gt_where = f"{gt_dir.relative_to(root).as_posix()!r}"
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} images in {where} have no clean match in {gt_where} ({_few(missing)})"
        )
    if ambiguous:
        problems.append(
            f"{len(ambiguous)} images in {where} match more than one clean image in "
            f"{gt_where} ({_few(ambiguous)})"
        )
    if twins and strict:
        problems.append(f"two images in {where} share a name ({_few(twins)})")
    if not pairs:
        raise layout_error(
            layout,
            root,
            f"no file in {where} matches one in {gt_where}"
            + (f": {problems[0]}" if ambiguous else ""),
        )
    if problems and strict:
        raise layout_error(layout, root, "; ".join(problems) + "; a benchmark scores every image")
    for problem in problems:
        log.warning("%s; left out", problem)
    if strict:  # an interrupted copy of the degraded images: the scores cover only the rest
        used = {gt for _, gt, _ in pairs}
        unused = sorted(p.relative_to(gt_dir).as_posix() for p in index.values() if p not in used)
        if unused:
            log.warning(
                "%d clean images in %s have no degraded image in %s (%s); the scores leave "
                "them out",
                len(unused),
                gt_where,
                where,
                _few(unused),
            )
    return pairs


def pair_samples(
    pairs: Iterable[tuple[Path, Path, str]],
    kind: str,
    source: str,
    gt_dir: Path,
    group: Group = same_scene,
) -> list[Sample]:
    return [
        Sample(kind, name, gt, lq, group=group(gt.relative_to(gt_dir)), source=source)
        for lq, gt, name in pairs
    ]


_SCALE_TAG = re.compile(r"__s\d+$")  # the corpus's copies of one photo at other scales


def scene_groups(files: Sequence[Path], folder: Path) -> dict[Path, str]:
    """The scene each clean photo shows, so that the validation split keeps its other
    versions on its side: the ``group`` column of a ``manifest.csv`` in ``folder`` or above it
    (the corpus's: a photo at three scales, the two views of a stereo pair), else the path
    without a trailing scale tag (``name__s050``)."""
    listed: dict[Path, str] = {}
    for where in (folder, folder.parent):
        manifest = where / "manifest.csv"
        if not manifest.is_file():
            continue
        with contextlib.suppress(OSError, csv.Error, UnicodeDecodeError):
            with manifest.open(newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if row.get("file") and row.get("group"):
                        listed[(where / row["file"]).resolve()] = "manifest:" + row["group"]
        break
    groups = {}
    for path in files:
        rel = path.relative_to(folder).with_suffix("").as_posix()
        groups[path] = listed.get(path.resolve()) or _SCALE_TAG.sub("", rel)
    return groups


def clean_samples(
    files: Sequence[Path], folder: Path, kinds: Sequence[str | None], source: str
) -> list[Sample]:
    """Clean-only samples (degraded on the fly), one per file and kind."""
    groups = scene_groups(files, folder)
    out = []
    for kind in kinds:
        for path in files:
            rel = path.relative_to(folder)
            out.append(
                Sample(kind, rel.with_suffix("").as_posix(), path, None, groups[path], source)
            )
    return out


def expansion_key(kind: str) -> str:
    return "noise" if kind.startswith("noise_") else kind


# --- the layouts ---------------------------------------------------------------------------


def paired_samples(root: Path, kind: str, *, strict: bool = False) -> list[Sample]:
    for lq_name, gt_name in (("lq", "gt"), ("input", "target"), ("degraded", "clean")):
        lq_dir, gt_dir = find_dir(root, lq_name), find_dir(root, gt_name)
        if lq_dir is not None and gt_dir is not None:
            pairs = match_pairs("paired", root, lq_dir, gt_dir, strict=strict)
            return pair_samples(pairs, kind, _folder_name(root), gt_dir, _scenes_of(pairs, gt_dir))
    raise layout_error("paired", root, "no degraded/clean folder pair")


def _scenes_of(pairs: Sequence[tuple[Path, Path, str]], gt_dir: Path) -> Group:
    """Copies of one clean photo at other scales (``__s050``) or listed as one scene in a
    ``manifest.csv`` stay on one side of the split; any other pair keeps its own group, as
    named before such copies were grouped (its path), so existing splits stay as they were."""
    scenes = scene_groups([gt for _, gt, _ in pairs], gt_dir)

    def group(rel: PurePath) -> str:
        scene = scenes[gt_dir / rel]
        return scene if scene != rel.with_suffix("").as_posix() else same_scene(rel)

    return group


def synthetic_samples(root: Path) -> list[Sample]:
    """Every photo under ``root`` but those named as degraded ones (the shipped samples'
    ``sample_degraded.jpg``, what ``bench --save-images`` writes), which would be degraded
    again and learnt as clean: the rule ``bench --images`` follows."""
    listed = list_images(root)
    files = [f for f in listed if "degraded" not in f.name.lower()]
    if len(files) < len(listed):
        skipped = sorted(f.relative_to(root).as_posix() for f in set(listed) - set(files))
        log.warning(
            "%d images under %s are named as degraded ones (%s); left out: the synthetic "
            "layout degrades clean photos",
            len(skipped),
            root,
            ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else ""),
        )
    if not files:
        raise layout_error("synthetic", root, "no images")
    return clean_samples(files, root, [None], _folder_name(root))


def _folder_name(root: Path) -> str:
    """The data folder's own name, which seeds its split: the same however the path to it
    is written (``data.root=.`` from inside it, a path with ``..`` in it)."""
    return Path(os.path.abspath(root)).name


@dataclass(frozen=True)
class TaskFolders:
    """Where one task's images sit under ``Train/`` or ``test/`` of the three/five-task tree.

    ``path`` is the folder chain below the split folder; each step lists the names it may have
    (any case). Noise has only clean images (``lq`` is None) and is degraded on the fly.
    """

    kind: str  # "noise" stands for every requested noise level
    path: tuple[tuple[str, ...], ...]
    lq: str | None
    gt: str | None
    source: str
    key: Key = same_name
    nested_lq: bool = False  # degraded images in subfolders of a flat clean folder (match_pairs)
    group: Group = same_scene


TRAIN_TASKS: tuple[TaskFolders, ...] = (
    TaskFolders("noise", (("Denoise",),), None, None, "BSD400+WED"),
    TaskFolders("rain", (("Derain",),), "rainy", "gt", "Rain100L", rain_name),
    TaskFolders(
        "haze", (("Dehaze",),), "synthetic", "original", "RESIDE-OTS", hazy_scene, nested_lq=True
    ),
    TaskFolders("blur", (("Deblur",),), "blur", "sharp", "GoPro", group=video_sequence),
    TaskFolders("low_light", (("Enhance",),), "low", "gt", "LOL-v1"),
)
TEST_TASKS: tuple[TaskFolders, ...] = (
    TaskFolders("noise", (("denoise",), ("bsd68", "cbsd68")), None, None, "CBSD68"),
    TaskFolders("rain", (("derain",), ("Rain100L",)), "input", "target", "Rain100L", rain_name),
    TaskFolders(
        "haze", (("dehaze",),), "input", "target", "SOTS-outdoor", hazy_scene, nested_lq=True
    ),
    TaskFolders(
        "blur", (("deblur",), ("gopro",)), "input", "target", "GoPro", group=video_sequence
    ),
    TaskFolders("low_light", (("enhance",), ("lol",)), "input", "target", "LOL-v1"),
)


def task_samples(
    layout: str, root: Path, split: str, tasks: Sequence[TaskFolders], kinds: Sequence[str]
) -> list[Sample]:
    """Samples of the three- or five-task setting for ``kinds``, from the folders ``tasks`` name."""
    top = require_dir(layout, root, root, split)
    strict = split == "test"
    out: list[Sample] = []
    for task in tasks:
        wanted = [k for k in kinds if expansion_key(k) == task.kind]
        if not wanted:
            continue
        folder = top
        for names in task.path:
            folder = require_dir(layout, root, folder, *names)
        if task.lq is None or task.gt is None:
            files = require_images(layout, root, folder)
            if strict:
                _check_flat(layout, root, folder, files)
            out += clean_samples(files, folder, wanted, task.source)
            continue
        lq = require_dir(layout, root, folder, task.lq)
        gt = require_dir(layout, root, folder, task.gt)
        pairs = match_pairs(
            layout, root, lq, gt, task.key, task.key, strict=strict, nested_lq=task.nested_lq
        )
        out += pair_samples(pairs, task.kind, task.source, gt, task.group)
    return out


def _check_flat(layout: str, root: Path, folder: Path, files: Sequence[Path]) -> None:
    """A clean-only test folder holds its clean images at the top: subfolders are most often
    a download's degraded copies (CBSD68's noisy15/25/50 beside original_png), which would be
    scored as clean images."""
    subfolders = sorted({f.relative_to(folder).parts[0] for f in files if f.parent != folder})
    if subfolders:
        raise layout_error(
            layout,
            root,
            f"{folder.relative_to(root).as_posix()!r} should hold clean images only, at its "
            f"top level; it has images in subfolders ({_few([s + '/' for s in subfolders])})",
        )
    # 0001.png beside 0001.jpg (a format conversion left behind) would be scored twice, with
    # the same noise, under one name.
    stems: dict[str, str] = {}
    twins = []
    for f in files:
        stem = f.relative_to(folder).with_suffix("").as_posix()
        if stem in stems:
            twins.append(f"{stems[stem]} and {f.name}")
        stems[stem] = f.name
    if twins:
        raise layout_error(
            layout,
            root,
            f"two images in {folder.relative_to(root).as_posix()!r} share a name "
            f"({_few(twins)}); a benchmark scores each image once",
        )


def task_train_samples(layout: str, root: Path, kinds: Sequence[str]) -> list[Sample]:
    """Training samples of the three- or five-task setting for the requested kinds."""
    return task_samples(layout, root, "Train", TRAIN_TASKS, kinds)


def task_test_samples(layout: str, root: Path, kinds: Sequence[str]) -> list[Sample]:
    """Test samples of the three- or five-task setting: CBSD68, Rain100L, SOTS, GoPro, LOL-v1."""
    return task_samples(layout, root, "test", TEST_TASKS, kinds)


def cdd11_labels(kinds: Iterable[str] | None) -> list[str]:
    """CDD-11 labels for ``kinds`` (labels or composites in any spelling), in table order."""
    if kinds is None:
        return list(CDD11)
    by_canonical = {canonical_kind(label): label for label in CDD11}
    labels = []
    for kind in kinds:
        label = by_canonical.get(canonical_kind(kind))
        if label is None:
            raise ValueError(f"{kind!r} is not a CDD-11 degradation; CDD-11 has {', '.join(CDD11)}")
        labels.append(label)
    return [label for label in CDD11 if label in labels]


def cdd11_samples(root: Path, split_dir: str, labels: Sequence[str]) -> list[Sample]:
    folder = require_dir("cdd11", root, root, split_dir, f"CDD-11_{split_dir}")
    gt = require_dir("cdd11", root, folder, "clear")
    out: list[Sample] = []
    folders = {label: name for name, label in CDD11_FOLDERS.items()}
    for label in labels:
        lq = require_dir("cdd11", root, folder, folders[label])
        pairs = match_pairs("cdd11", root, lq, gt, strict=split_dir == "test")
        out += pair_samples(pairs, label, "CDD-11", gt)
    return out


# --- the validation split ------------------------------------------------------------------


def stable_hash(*parts: object) -> int:
    """A 63-bit hash of ``parts`` that is the same on every machine and run."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def split_samples(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(train, val): per source, the ``fraction`` of groups with the smallest seeded hash is val.

    Ranking by a hash of the group name keeps the split the same every time (and almost the
    same when files are added); whole groups move, so a scene's other versions (the 35 hazy
    renderings of one RESIDE image, the 11 CDD-11 degradations, the 3 noise levels) never leak
    into training.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    val_groups: set[tuple[str, str]] = set()
    by_source: dict[str, set[str]] = {}
    for s in samples:
        by_source.setdefault(s.source, set()).add(s.group)
    for source, groups in by_source.items():
        n_val = round(len(groups) * fraction)
        if fraction > 0 and n_val == 0 and len(groups) >= 2:
            n_val = 1
        ranked = sorted(groups, key=lambda g: (stable_hash(seed, source, g), g))
        val_groups.update((source, g) for g in ranked[:n_val])
    train = [s for s in samples if (s.source, s.group) not in val_groups]
    val = [s for s in samples if (s.source, s.group) in val_groups]
    return train, val
