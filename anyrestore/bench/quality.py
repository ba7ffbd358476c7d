"""Quality runs: restore every test pair with every candidate and average PSNR / SSIM.

Per test set the scores are averaged over its images; the "average" row is the mean over
test sets (not over images), as in the papers' "Average" column. On request the per-image scores
come too (records with an ``image`` key): a mean can hide one photo a model ruins.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anyrestore.bench.candidates import IDENTITY, Candidate
from anyrestore.bench.suites import Task
from anyrestore.errors import DataError, InputError, UsageError
from anyrestore.files import AtomicFile, atomic_path
from anyrestore.metrics import SSIM_WINDOW, psnr, rgb_to_y, ssim

AVERAGE = "average"


@dataclass(frozen=True)
class Pair:
    """A test image: degraded input and clean reference, (3, h, w) float in [0, 1] on CPU."""

    kind: str
    name: str
    degraded: Tensor
    clean: Tensor


@dataclass
class _Scores:
    names: list[str] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    inputs: list[float] = field(default_factory=list)  # the degraded input's PSNR


def score(restored: Tensor, clean: Tensor, *, y_channel: bool = False) -> tuple[float, float]:
    """PSNR and SSIM of one image, on full RGB or on BT.601 luma."""
    restored, clean = _scored(restored, clean, y_channel)
    return psnr(restored, clean).item(), ssim(restored, clean).item()


def _psnr(restored: Tensor, clean: Tensor, *, y_channel: bool = False) -> float:
    """The PSNR of :func:`score` alone."""
    return psnr(*_scored(restored, clean, y_channel)).item()


def _scored(restored: Tensor, clean: Tensor, y_channel: bool) -> tuple[Tensor, Tensor]:
    restored = restored.clamp(0, 1).double()
    clean = clean.double()
    if y_channel:
        restored, clean = rgb_to_y(restored), rgb_to_y(clean)
    return restored, clean


def run_quality(
    candidates: Sequence[Candidate],
    tasks: Sequence[Task],
    pairs: Iterable[Pair],
    *,
    suite: str,
    y_channel: bool = False,
    save_dir: str | os.PathLike[str] | None = None,
    on_pair: Callable[[Pair], None] | None = None,
    per_image: bool = False,
) -> list[dict[str, Any]]:
    """Score every pair with every candidate; one record per (candidate, task) plus averages.

    With ``per_image`` each (candidate, task) record is followed by one record per image.
    """
    data_kind = {t.kind: t.data_kind for t in tasks}  # what restorers told the kind are told
    scores: dict[tuple[str, str], _Scores] = {}
    saver = None
    if save_dir is not None:  # an unwritable folder fails before any model runs
        # a name no file of the user's has (a "probe" of theirs could be a folder, a link)
        AtomicFile(Path(save_dir) / f".anyrestore-probe-{secrets.token_hex(8)}").discard()
        saver = _Saver(Path(save_dir), suite)
    for pair in pairs:
        if pair.kind not in data_kind:
            raise DataError(
                f"test pair {pair.name!r} has kind {pair.kind!r}, not one of this suite's"
            )
        if pair.degraded.shape != pair.clean.shape:
            raise DataError(
                f"{pair.kind}/{pair.name}: degraded {tuple(pair.degraded.shape)} and clean "
                f"{tuple(pair.clean.shape)} differ in size"
            )
        h, w = pair.clean.shape[-2:]
        if min(h, w) < SSIM_WINDOW:
            raise InputError(
                f"{pair.kind}/{pair.name}: {w}x{h} is too small to score "
                f"(SSIM needs {SSIM_WINDOW} px a side)"
            )
        if on_pair is not None:
            on_pair(pair)
        if saver is not None:
            saver.save(pair, "degraded", pair.degraded)
            saver.save(pair, "clean", pair.clean)
        # The input's own score goes in every per-image record: it tells whether two runs
        # compared later (anyrestore.bench.compare) degraded each photo the same way.
        inputs = _psnr(pair.degraded, pair.clean, y_channel=y_channel)
        for cand in candidates:
            with torch.inference_mode():
                restored = cand.apply(pair.degraded, data_kind[pair.kind])
            if restored.shape != pair.clean.shape:
                raise InputError(
                    f"{cand.label} returned {tuple(restored.shape)} for {tuple(pair.clean.shape)}"
                )
            p, s = score(restored, pair.clean, y_channel=y_channel)
            entry = scores.setdefault((cand.label, pair.kind), _Scores())
            entry.inputs.append(inputs)
            entry.names.append(pair.name)
            entry.psnr.append(p)
            entry.ssim.append(s)
            if saver is not None and cand.label != IDENTITY:  # identity: the degraded
                saver.save(pair, cand.label, restored)
    if not scores:
        raise DataError(f"no test images found for suite {suite!r}")
    return _records(
        candidates, tasks, scores, suite=suite, y_channel=y_channel, per_image=per_image
    )


def _records(
    candidates: Sequence[Candidate],
    tasks: Sequence[Task],
    scores: dict[tuple[str, str], _Scores],
    *,
    suite: str,
    y_channel: bool,
    per_image: bool,
) -> list[dict[str, Any]]:
    present = [t for t in tasks if any((c.label, t.kind) in scores for c in candidates)]
    base = next((c.label for c in candidates if c.label == IDENTITY), None)  # gains: vs input
    records: list[dict[str, Any]] = []
    for cand in candidates:
        common: dict[str, Any] = {"model": cand.label, "source": cand.source, "suite": suite}
        if cand.compute:  # how a model ran: device, precision, layout, runtime and why
            common["compute"] = cand.compute
        channel = {"channel": "y" if y_channel else "rgb"}
        rows, images = [], []
        for task in present:
            entry = scores[(cand.label, task.kind)]
            head = common | {"kind": task.kind, "title": task.title} | channel
            mean = {"images": len(entry.psnr), "psnr": _mean(entry.psnr), "ssim": _mean(entry.ssim)}
            rows.append(head | mean)
            if per_image:
                images.extend(
                    head | {"image": n, "images": 1, "psnr": p, "ssim": s, "input_psnr": i}
                    for n, p, s, i in zip(
                        entry.names, entry.psnr, entry.ssim, entry.inputs, strict=True
                    )
                )
        rows.append(
            common
            | {"kind": AVERAGE, "title": "Average"}
            | channel
            | {
                "images": sum(r["images"] for r in rows),
                "psnr": _mean([r["psnr"] for r in rows]),
                "ssim": _mean([r["ssim"] for r in rows]),
            }
        )
        records.extend(rows + images)
    if base is not None:
        ref = {(r["kind"], r.get("image")): r for r in records if r["model"] == base}
        for r in records:
            b = ref[(r["kind"], r.get("image"))]
            r["psnr_gain"] = r["psnr"] - b["psnr"]
            r["ssim_gain"] = r["ssim"] - b["ssim"]
    return records


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.+=#-]+", "_", text).strip("._") or "x"


def save_png(image: Tensor, path: Path) -> None:
    """Write a (3, h, w) [0, 1] tensor as 8-bit PNG atomically."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


class _Saver:
    """``--save-images``: ``<root>/<suite>/<kind>/<image>_<what>.png``, one file name per
    photo: two names that clean up alike ("a b", "a_b") get ``#2``, as model labels do."""

    def __init__(self, root: Path, suite: str) -> None:
        self.root, self.suite = root, suite
        self.stems: dict[tuple[str, str], str] = {}  # (kind, photo) -> its file stem

    def _stem(self, pair: Pair) -> str:
        key = (pair.kind, pair.name)
        if key not in self.stems:
            taken = {s for (kind, _), s in self.stems.items() if kind == pair.kind}
            base = stem = _safe_name(pair.name)
            n = 2
            while stem in taken:
                stem, n = f"{base}#{n}", n + 1
            self.stems[key] = stem
        return self.stems[key]

    def save(self, pair: Pair, what: str, image: Tensor) -> None:
        folder = self.root / self.suite / _safe_name(pair.kind)
        save_png(image.float(), folder / f"{self._stem(pair)}_{_safe_name(what)}.png")
