"""Datasets for training, validation and testing, and ``build_dataset`` / ``iter_test_pairs``.

Items are ``dict(lq, gt, kind, name)`` with (3, h, w) float tensors in [0, 1]; test items also
carry ``dataset`` (e.g. "Rain100L"). Training items are random crops with random flips;
validation items are centre crops of a fixed split; test items are whole images. Clean-only
sources are degraded on the fly with ``degrade``. See docs/datasets.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from anyrestore.data.degradations import SINGLE_KINDS, add_mist, degrade, parse_kind
from anyrestore.data.imagefiles import image_size, load_image
from anyrestore.data.layouts import (
    EXPANSION_RATIOS,
    FIVE_KINDS,
    FIVE_TEST_KINDS,
    LAYOUTS,
    THREE_KINDS,
    TREES,
    Sample,
    cdd11_labels,
    cdd11_samples,
    expansion_key,
    paired_samples,
    split_samples,
    stable_hash,
    synthetic_samples,
    task_test_samples,
    task_train_samples,
)
from anyrestore.errors import DataError, InputError

log = logging.getLogger("anyrestore")

Split = Literal["train", "val", "test"]
Kinds = Sequence[str] | Mapping[str, float] | None

# How many neighbouring samples to try before giving up on a folder of unreadable files.
MAX_SUBSTITUTES = 64

# ``dark_scenes`` scales a clean crop by a factor drawn from this range. A photo of mean
# brightness 0.3-0.45 then lands at 0.08-0.34, where real night and forest scenes sit;
# synthetic low light keeps its own, darker range.
DARK_SCENE_SCALE = (0.25, 0.75)

# ``pale_scenes`` raises a clean crop to a power drawn from this range, a high-key tone curve:
# a photo of mean 0.4 lands at 0.53-0.73, as a white wall, a white clock face or an overcast
# snowfield does. Black stays black and white white, which is what tells such a scene from
# haze, a veil that lifts the darkest pixels too (lifting toward white, 1 - (1 - x) s, taught
# anyir_t to leave haze in place: docs/model-card.md).
PALE_SCENE_GAMMA = (0.35, 0.7)

# ``color_jitter`` = j multiplies a clean training crop (target too) by an exposure gain
# exp(U(-j, j)) and each channel by exp(U(-j/2, j/2)), a white-balance shift, so a small corpus
# shows a model more exposures and colour casts than its photos have.


def pad_to(x: Tensor, h: int, w: int) -> Tensor:
    """Reflect-pad (c, H, W) evenly on all sides up to at least (h, w), repeating for tiny images."""
    while x.shape[-2] < h or x.shape[-1] < w:
        need_h, need_w = max(0, h - x.shape[-2]), max(0, w - x.shape[-1])
        top, bottom = (min(n, x.shape[-2] - 1) for n in (need_h // 2, need_h - need_h // 2))
        left, right = (min(n, x.shape[-1] - 1) for n in (need_w // 2, need_w - need_w // 2))
        if top + bottom + left + right == 0:  # a 1-pixel side cannot be reflected
            return F.pad(
                x,
                (need_w // 2, need_w - need_w // 2, need_h // 2, need_h - need_h // 2),
                mode="replicate",
            )
        x = F.pad(x.unsqueeze(0), (left, right, top, bottom), mode="reflect").squeeze(0)
    return x


def sizes_agree(a: Tensor | tuple[int, int], b: Tensor | tuple[int, int]) -> bool:
    """Whether a degraded and a clean image are one picture by their sizes (tensors, or
    (h, w)): equal, or apart by a border that a centre crop removes (SOTS-indoor's hazy
    images are 20 px smaller than their clear ones); at most 8 px or a tenth of the side."""
    a_hw = a.shape[-2:] if isinstance(a, Tensor) else a
    b_hw = b.shape[-2:] if isinstance(b, Tensor) else b
    return all(abs(m - n) <= max(8, max(m, n) // 10) for m, n in zip(a_hw, b_hw, strict=True))


def common_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Centre-crop two images to their common size (a few datasets differ by a border)."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])

    def centre(x: Tensor) -> Tensor:
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        return x[..., top : top + h, left : left + w]

    return centre(a), centre(b)


class RestorationDataset(Dataset):
    """Samples -> items; ``mode`` picks random crops + flips (train), centre crops (val) or
    whole images (test).

    Clean-only samples are degraded by their kind (or by one drawn from ``mix``) after
    cropping, quantised to 8 bits like a saved image unless ``quantize`` is off. With
    ``degrade_in_loop`` they come back undegraded (``lq`` is the clean crop) so the training
    loop can call ``degrade_batch(batch["gt"], batch["kind"])`` on its device.

    An unreadable file in train/val is skipped with one warning and replaced by the next
    readable sample; in test mode it raises InputError (a benchmark must not substitute).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        mode: Split,
        crop: int = 128,
        seed: int = 0,
        repeats: Sequence[int] | None = None,
        mix: Mapping[str, float] | None = None,
        flips: bool = True,
        quantize: bool = True,
        degrade_in_loop: bool = False,
        dark_scenes: float = 0.0,
        misty_scenes: float = 0.0,
        pale_scenes: float = 0.0,
        color_jitter: float = 0.0,
    ) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be train, val or test, got {mode!r}")
        if crop < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        scenes = {
            "dark_scenes": dark_scenes,
            "misty_scenes": misty_scenes,
            "pale_scenes": pale_scenes,
        }
        for name, p in scenes.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        if not 0.0 <= color_jitter <= 1.0:
            raise ValueError(f"color_jitter must be in [0, 1], got {color_jitter}")
        self.samples = list(samples)
        self.mode = mode
        self.crop = crop
        self.seed = seed
        self.flips = flips
        self.quantize = quantize
        self.degrade_in_loop = degrade_in_loop
        self.dark_scenes = dark_scenes if mode == "train" else 0.0
        self.misty_scenes = misty_scenes if mode == "train" else 0.0
        self.pale_scenes = pale_scenes if mode == "train" else 0.0
        self.color_jitter = color_jitter if mode == "train" else 0.0
        if any(s.kind is None for s in self.samples) and not mix:
            raise ValueError("samples without a kind need a mix of kinds to draw from")
        self.mix_kinds = list(mix) if mix else []
        self.mix_weights = torch.tensor([float(mix[k]) for k in self.mix_kinds]) if mix else None
        # expanded index: sample i appears repeats[i] times (the papers' data expansion)
        repeats = list(repeats) if repeats is not None else [1] * len(self.samples)
        self.index = [i for i, r in enumerate(repeats) for _ in range(r)]
        self._bad: set[Path] = set()
        if mode == "test":
            self._check_test_pairs()

    def _check_test_pairs(self) -> None:
        """Every pair's sizes, from the files' headers, before any model runs: a mismatch
        found at the 900th of 1,111 pairs would end a long benchmark with nothing."""
        for sample in self.samples:
            if sample.lq is None:
                continue
            lq, gt = (image_size(p) for p in (sample.lq, sample.gt))
            if not sizes_agree(lq, gt):
                sizes = f"{lq[1]}x{lq[0]} against {gt[1]}x{gt[0]}"
                raise DataError(
                    f"{sample.lq} and its clean image {sample.gt} differ in size ({sizes})"
                )

    def __len__(self) -> int:
        return len(self.index)

    def _generator(self, item: int, sample: Sample) -> torch.Generator:
        if self.mode == "train":  # fresh each time; reproducible through torch.manual_seed
            seed = int(torch.randint(0, 2**62, (1,)))
        elif self.mode == "val":
            seed = stable_hash(self.seed, "val", item, sample.name)
        else:
            # Per (photo, kind) only: a copy of the folder under another name is degraded alike.
            seed = stable_hash(self.seed, "test", sample.kind, sample.name)
        return torch.Generator().manual_seed(seed)

    def _read(self, path: Path) -> Tensor | None:
        if path in self._bad:
            return None
        try:
            return load_image(path)
        except Exception as err:  # Pillow raises many types for damaged files
            if self.mode == "test":
                raise InputError(f"cannot read test image {path}: {err}") from err
            self._bad.add(path)
            log.warning("skipping unreadable image %s: %s", path, err)
            return None

    def _mismatched(self, sample: Sample, lq: Tensor, gt: Tensor) -> None:
        """A pair whose sizes say it is not one picture: a DataError in a test (a benchmark
        would score a crop of another image), else skipped like an unreadable file."""
        sizes = f"{lq.shape[-1]}x{lq.shape[-2]} against {gt.shape[-1]}x{gt.shape[-2]}"
        message = f"{sample.lq} and its clean image {sample.gt} differ in size ({sizes})"
        if self.mode == "test":
            raise DataError(message)
        assert sample.lq is not None
        self._bad.add(sample.lq)
        log.warning("skipping %s", message)
        return None

    def __getitem__(self, item: int) -> dict:
        first = self.index[item]
        n = len(self.samples)
        for step in range(min(n, MAX_SUBSTITUTES)):
            sample = self.samples[(first + step) % n]
            gt = self._read(sample.gt)
            lq = self._read(sample.lq) if sample.lq is not None and gt is not None else None
            if lq is not None and gt is not None and not sizes_agree(lq, gt):
                lq = self._mismatched(sample, lq, gt)
            if gt is not None and (sample.lq is None or lq is not None):
                return self._make_item(item, sample, lq, gt)
        raise DataError(
            f"no readable image among {min(n, MAX_SUBSTITUTES)} samples near {self.samples[first].gt}"
        )

    def _make_item(self, item: int, sample: Sample, lq: Tensor | None, gt: Tensor) -> dict:
        g = self._generator(item, sample)
        kind = sample.kind
        if kind is None:
            pick = torch.multinomial(self.mix_weights, 1, generator=g)
            kind = self.mix_kinds[int(pick)]
        pair = torch.cat(common_size(lq, gt)) if lq is not None else gt
        upside_down = False
        if self.mode != "test":
            pair = pad_to(pair, self.crop, self.crop)
            h, w = pair.shape[-2:]
            if self.mode == "train":
                top = int(torch.randint(0, h - self.crop + 1, (1,), generator=g))
                left = int(torch.randint(0, w - self.crop + 1, (1,), generator=g))
            else:
                top, left = (h - self.crop) // 2, (w - self.crop) // 2
            pair = pair[:, top : top + self.crop, left : left + self.crop]
            if self.mode == "train" and self.flips:
                flip_h, flip_v = torch.rand(2, generator=g).tolist()
                if flip_h < 0.5:
                    pair = pair.flip(-1)
                upside_down = flip_v < 0.5
                if upside_down and lq is not None:  # a real pair turns over with its weather
                    pair = pair.flip(-2)
        if lq is not None:
            lq, gt = pair[:3].contiguous(), pair[3:].contiguous()
        else:
            gt = self._jitter(pair.contiguous(), g)
            gt = self._maybe_mist(self._maybe_darken(gt, kind, g), kind, g)
            gt = self._maybe_pale(gt, kind, g)
            # Synthetic haze and mist are thickest at the top (the far end of a photo): a crop
            # turned over before either would put the thick veil on its foreground. Mist turns
            # over with its scene; a crop to be hazed stays upright, as every hazy photo is.
            if upside_down and "haze" not in parse_kind(kind):
                gt = gt.flip(-2)
            if self.degrade_in_loop:
                lq = gt
            else:
                lq = degrade(gt, kind, generator=g)
                if self.quantize:
                    lq = torch.round(lq * 255) / 255
        out = {"lq": lq, "gt": gt, "kind": kind, "name": sample.name}
        if self.mode == "test":
            out["dataset"] = sample.source
        return out

    def _jitter(self, gt: Tensor, g: torch.Generator) -> Tensor:
        """Scale the clean crop's exposure and white balance (``color_jitter``; 0 = off).

        Nothing is drawn when it is off, so the random stream is the same as without.
        """
        j = self.color_jitter
        if j <= 0.0:
            return gt
        u = torch.rand(4, generator=g) * 2 - 1
        gain = math.exp(j * float(u[0])) * torch.exp(0.5 * j * u[1:]).view(3, 1, 1)
        return (gt * gain).clamp(0, 1)

    def _maybe_darken(self, gt: Tensor, kind: str, g: torch.Generator) -> Tensor:
        """With probability ``dark_scenes``, make the clean crop itself a dark scene.

        Without it a model sees dark inputs only as synthetic low light, learns "dark means
        brighten", and lifts genuinely dark photos (a forest at dusk) under every other kind.
        Low-light kinds are left alone: their target must stay the normally exposed crop.
        """
        if self.dark_scenes <= 0.0:
            return gt
        u, t = torch.rand(2, generator=g).tolist()  # always drawn: one stream for every kind
        if u >= self.dark_scenes or "low_light" in parse_kind(kind):
            return gt
        lo, hi = DARK_SCENE_SCALE
        return gt * (lo + (hi - lo) * t)

    def _maybe_mist(self, gt: Tensor, kind: str, g: torch.Generator) -> Tensor:
        """With probability ``misty_scenes``, veil the clean crop (the target too) in a light mist.

        Without it the only veiled inputs a model sees are synthetic haze, and it "dehazes" misty
        photos under every other kind. Kinds with haze are left alone: their target must stay
        haze-free. Nothing is drawn when it is off, so the random stream is the same as without.
        """
        if self.misty_scenes <= 0.0:
            return gt
        u = float(torch.rand(1, generator=g))
        if u >= self.misty_scenes or "haze" in parse_kind(kind):
            return gt
        return add_mist(gt, generator=g)

    def _maybe_pale(self, gt: Tensor, kind: str, g: torch.Generator) -> Tensor:
        """With probability ``pale_scenes``, give the clean crop (the target too) a high-key tone.

        A pale, flat scene (a white clock on a white wall) looks to a model like dense haze
        unless it has seen such scenes as clean targets: it darkens them under every kind.
        Kinds with haze are left alone: their target must stay haze-free. Nothing is drawn when
        it is off, so the random stream is the same as without.
        """
        if self.pale_scenes <= 0.0:
            return gt
        u, t = torch.rand(2, generator=g).tolist()
        if u >= self.pale_scenes or "haze" in parse_kind(kind):
            return gt
        lo, hi = PALE_SCENE_GAMMA
        return gt.clamp(min=0).pow(lo + (hi - lo) * t)


def _normalise_mix(kinds: Kinds) -> dict[str, float]:
    if kinds is None:
        return {k: 1.0 for k in SINGLE_KINDS}
    mix = dict(kinds) if isinstance(kinds, Mapping) else {k: 1.0 for k in kinds}
    if not mix:
        raise ValueError("kinds is empty")
    for kind, weight in mix.items():
        parse_kind(kind)
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"weight of {kind!r} must be a finite number >= 0, got {weight}")
    if sum(mix.values()) <= 0:
        raise ValueError("kind weights sum to zero")
    return {k: float(w) for k, w in mix.items()}


def _task_kinds(layout: str, kinds: Kinds, split: Split) -> list[str]:
    allowed = THREE_KINDS if layout == "three" else FIVE_KINDS
    if kinds is None:
        return list(FIVE_TEST_KINDS if layout == "five" and split == "test" else allowed)
    out = []
    for kind in kinds:
        if kind not in allowed:
            raise ValueError(
                f"{kind!r} is not part of the {layout}-task setting ({', '.join(allowed)})"
            )
        out.append(kind)
    return out


def _repeats(samples: Sequence[Sample], expansion: bool | Mapping[str, int]) -> list[int]:
    if expansion is False:
        return [1] * len(samples)
    ratios = dict(EXPANSION_RATIOS)
    if isinstance(expansion, Mapping):
        unknown = sorted(set(expansion) - set(EXPANSION_RATIOS))
        if unknown:  # ignored, it would leave the papers' ratio in place without a word
            raise ValueError(
                f"expansion has no task {', '.join(map(repr, unknown))} (its tasks: "
                f"{', '.join(EXPANSION_RATIOS)}; the noise levels share 'noise')"
            )
        ratios.update(expansion)
    return [int(ratios.get(expansion_key(s.kind or ""), 1)) for s in samples]


def build_dataset(
    layout: str,
    root: str | Path,
    *,
    split: Split = "train",
    crop: int = 128,
    kinds: Kinds = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    split_seed: int = 0,
    expansion: bool | Mapping[str, int] = True,
    flips: bool = True,
    quantize: bool = True,
    degrade_in_loop: bool = False,
    dark_scenes: float = 0.0,
    misty_scenes: float = 0.0,
    pale_scenes: float = 0.0,
    color_jitter: float = 0.0,
) -> RestorationDataset:
    """A dataset for ``layout`` ("paired", "synthetic", "three", "five", "cdd11") under ``root``.

    ``kinds``: for "synthetic" the degradations to draw from (a list, or kind -> weight);
    for "three"/"five"/"cdd11" a subset of the setting's tasks; for "paired" the label of its
    items. ``expansion`` applies the papers' ratios (3/120/5/200, dehaze 1) to training splits
    of "three"/"five", or per-task overrides, or nothing (False). "val" is a fixed
    ``val_fraction`` of the training images (split by ``split_seed``, disjoint from "train";
    ``seed`` fixes the validation items' degradations).
    "test" gives whole images: the layout's test folders, or every image for "paired" and
    "synthetic" (each image once per kind there). ``dark_scenes``: the probability that a
    "synthetic" training crop of a kind without low light is first darkened into a dark scene
    (target included); ``misty_scenes``: the probability that one of a kind without haze is
    veiled in a light mist (target included); ``pale_scenes``: the probability that one of a
    kind without haze gets a high-key tone curve (target included); ``color_jitter``: the
    strength of a random exposure and white-balance change of each "synthetic" training crop
    (target included). Raises DataError when ``root`` does not have the layout's folder tree.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    # Options that synthesise from clean photos. On real degraded/clean pairs the loop would
    # degrade them a second time, and darkening or misting cannot be applied to both sides
    # consistently.
    synthetic_only = {
        "degrade_in_loop": degrade_in_loop,
        "dark_scenes": dark_scenes,
        "misty_scenes": misty_scenes,
        "pale_scenes": pale_scenes,
        "color_jitter": color_jitter,
    }
    for name, value in synthetic_only.items():
        if value and layout != "synthetic":
            raise ValueError(f"{name} needs the synthetic layout (clean photos only)")
    if isinstance(kinds, Mapping) and layout != "synthetic":
        # Real pairs come in the counts the folders hold: weights would be dropped silently.
        raise ValueError(
            "weighted kinds (a table) needs the synthetic layout; on real pairs list the tasks "
            "(data.expansion sets the shares of three and five)"
        )
    if isinstance(kinds, str):
        kinds = [kinds]
    root = Path(root)
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"{layout} layout: the data root {root} {problem}; expected {TREES[layout]} "
            "(see docs/datasets.md)"
        )
    mix = None
    if layout == "paired":
        label = "+".join(kinds) if kinds and not isinstance(kinds, Mapping) else "paired"
        samples = paired_samples(root, label, strict=split == "test")
    elif layout == "synthetic":
        mix = _normalise_mix(kinds)
        samples = synthetic_samples(root)
        if split == "test":  # every image once per kind, degraded with a fixed seed
            samples = [
                Sample(k, s.name, s.gt, None, s.group, s.source)
                for k, w in mix.items()
                if w > 0
                for s in samples
            ]
    elif layout in ("three", "five"):
        task_kinds = _task_kinds(layout, kinds, split)
        if split == "test":
            samples = task_test_samples(layout, root, task_kinds)
        else:
            samples = task_train_samples(layout, root, task_kinds)
    else:
        labels = cdd11_labels(kinds)
        samples = cdd11_samples(root, "test" if split == "test" else "train", labels)

    repeats = None
    if split != "test":
        train, val = split_samples(samples, val_fraction, split_seed)
        samples = train if split == "train" else val
        if not samples:
            raise DataError(
                f"{layout} layout under {root}: {_count(len(train) + len(val))} none for "
                f"the {split} split at val_fraction={val_fraction}; add images, or lower "
                "data.val_fraction (0 trains on all of them without validation)"
            )
        if split == "train" and layout in ("three", "five"):
            repeats = _repeats(samples, expansion)
    return RestorationDataset(
        samples,
        mode=split,
        crop=crop,
        seed=seed,
        repeats=repeats,
        mix=mix,
        flips=flips,
        quantize=quantize,
        degrade_in_loop=degrade_in_loop and split == "train",
        dark_scenes=dark_scenes,  # RestorationDataset applies these to training items only
        misty_scenes=misty_scenes,
        pale_scenes=pale_scenes,
        color_jitter=color_jitter,
    )


def iter_test_pairs(
    layout: str, root: str | Path, *, kinds: Kinds = None, seed: int = 0
) -> Iterator[dict]:
    """Whole test images of ``layout`` as items with ``dataset``; unreadable ones are skipped.

    Synthetic degradations (CBSD68 noise, the "synthetic" layout) use a seed fixed per image,
    so every run and every model sees the same degraded images.
    """
    dataset = build_dataset(layout, root, split="test", kinds=kinds, seed=seed)
    for i in range(len(dataset)):
        try:
            yield dataset[i]
        except InputError as err:
            log.warning("%s; skipped", err)


def _count(n: int) -> str:
    """ "1 image leaves", "2 images leave": for the split error."""
    return f"{n} image leaves" if n == 1 else f"{n} images leave"
