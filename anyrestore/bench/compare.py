"""Two checkpoints on the same bench pairs, kind by kind: is the new one better, and by how much
more than chance?

A held-out set of a dozen photos moves a kind's mean PSNR by tenths of a dB from one training
stage to the next, so a mean difference alone cannot say whether a new checkpoint lost a kind.
Both runs score the same degraded inputs (the synthetic suite's seeds are fixed per photo and
kind), so the differences are paired: their standard error is what a gap is measured against.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from anyrestore.bench.quality import AVERAGE
from anyrestore.errors import DataError, UsageError

#: How far a kind may fall behind under the release rule of docs/model-card.md (dB).
RELEASE_TOLERANCE = 0.1


@dataclass(frozen=True)
class KindDelta:
    """New minus old on one kind, over the images both runs scored."""

    kind: str
    old: float  # mean PSNR of the reference
    new: float
    delta: float  # mean of the per-image differences (= new - old)
    stderr: float | None  # standard error of those differences; None for one image
    ahead: int  # images on which the new checkpoint scored higher
    images: int
    #: New minus old on each image, by image name (a mean of a few tenths can rest on one
    #: photo whose whole tone moved).
    per_image: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The release rule (mean up, no kind more than ``tolerance`` behind) and the strict one."""

    mean_delta: float
    worst: KindDelta
    tolerance: float

    @property
    def release(self) -> bool:
        return self.mean_delta > 0 and self.worst.delta >= -self.tolerance

    @property
    def every_kind(self) -> bool:
        return self.worst.delta >= 0


def model_labels(records: Iterable[dict[str, Any]]) -> list[str]:
    """The models (baselines left out) a bench JSON file holds, in order of appearance."""
    labels: list[str] = []
    for r in records:
        if r.get("source") != "baseline" and r["model"] not in labels:
            labels.append(r["model"])
    return labels


def pick_model(records: Sequence[dict[str, Any]], label: str | None, where: str) -> str:
    """``label``, checked to be in ``records``, or the file's only model."""
    labels = model_labels(records)
    if label is not None:
        if label not in labels:
            raise UsageError(f"{where}: no model {label!r}; it has {', '.join(labels) or 'none'}")
        return label
    if len(labels) != 1:
        raise UsageError(
            f"{where}: {len(labels)} models ({', '.join(labels) or 'none'}); name one to compare"
        )
    return labels[0]


def _per_image(
    records: Iterable[dict[str, Any]], model: str, where: str
) -> dict[tuple[str, str], float]:
    scores = {}
    for r in records:
        if r["model"] != model or "image" not in r or r["kind"] == AVERAGE:
            continue
        if r["psnr"] is None:  # JSON has no infinity or NaN: the report writes them as null
            raise DataError(
                f"{where}: {model!r} has no finite PSNR for {r['image']} ({r['kind']}): an "
                "exact match or a broken output, which no mean difference can include"
            )
        scores[(r["kind"], r["image"])] = float(r["psnr"])
    if not scores:
        raise DataError(f"{where}: no per-image scores for {model!r}; run bench with --per-image")
    return scores


def _input_scores(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Each degraded input's PSNR: every per-image record holds it (``input_psnr``); a run
    written before that has it only where it scored the identity baseline."""
    scores = {
        (r["kind"], r["image"]): float(r["input_psnr"])
        for r in records
        if "image" in r and r["kind"] != AVERAGE and r.get("input_psnr") is not None
    }
    if not scores:
        with contextlib.suppress(DataError):
            scores = _per_image(records, "identity", "")
    return scores


#: Record fields that say how a run scored, with the bench option that sets each.
_SCORING = (("suite", "--suite"), ("channel", "--y-channel"))


def _check_same_scoring(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> None:
    """Both runs scored the same suite on the same channel (runs that predate a field are
    not judged by it): luma PSNR runs 1-2 dB from RGB PSNR, more than the release rule's
    tolerance."""
    for key, option in _SCORING:
        a = {str(r[key]) for r in old if r.get(key) is not None}
        b = {str(r[key]) for r in new if r.get(key) is not None}
        if a and b and a != b:
            raise DataError(
                f"the runs were scored differently ({key} {', '.join(sorted(a))} against "
                f"{', '.join(sorted(b))}): compare runs made with the same {option}"
            )


def _check_same_inputs(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> None:
    """The inputs' own scores must agree per image: the two runs degraded them alike."""
    a, b = _input_scores(old), _input_scores(new)
    for key in sorted(a.keys() & b.keys()):  # the first photo that differs, by name
        if abs(a[key] - b[key]) > 1e-6:
            kind, image = key
            raise DataError(
                f"the two runs degraded {image} ({kind}) differently: compare runs made with the "
                "same photos, --max-side and version of the degradations"
            )


def paired_deltas(
    old: Sequence[dict[str, Any]],
    new: Sequence[dict[str, Any]],
    *,
    old_model: str,
    new_model: str,
    shared_kinds: bool = False,
) -> list[KindDelta]:
    """One :class:`KindDelta` per kind, in the order of the old run, over the shared images.

    Both runs must have scored the same (kind, image) pairs: a kind or photo missing from one
    run would bias its mean, so it is an error, not something to skip. With ``shared_kinds``
    only the kinds both runs scored are compared (a ``bench --kinds`` run against a whole
    table); within each of them the photos must still be the same.
    """
    _check_same_scoring(old, new)
    _check_same_inputs(old, new)
    a = _per_image(old, old_model, "old")
    b = _per_image(new, new_model, "new")
    if shared_kinds:
        both = {k for k, _ in a} & {k for k, _ in b}
        if not both:
            raise DataError("the runs have no kind in common")
        a = {key: v for key, v in a.items() if key[0] in both}
        b = {key: v for key, v in b.items() if key[0] in both}
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())[:3]
        listed = ", ".join(f"{k}/{i}" for k, i in only)
        raise DataError(f"the runs scored different pairs (e.g. {listed}); rerun with the same set")
    kinds: list[str] = []
    for kind, _ in a:
        if kind not in kinds:
            kinds.append(kind)
    deltas = []
    for kind in kinds:
        images = [i for k, i in a if k == kind]
        diffs = [b[(kind, i)] - a[(kind, i)] for i in images]
        stderr = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        deltas.append(
            KindDelta(
                kind=kind,
                old=math.fsum(a[(kind, i)] for i in images) / len(images),
                new=math.fsum(b[(kind, i)] for i in images) / len(images),
                delta=math.fsum(diffs) / len(diffs),
                stderr=stderr,
                ahead=sum(d > 0 for d in diffs),
                images=len(images),
                per_image=dict(zip(images, diffs, strict=True)),
            )
        )
    return deltas


def verdict(deltas: Sequence[KindDelta], tolerance: float = RELEASE_TOLERANCE) -> Verdict:
    """The mean over kinds (as the bench's average row) and the kind that lost most."""
    if not deltas:
        raise DataError("nothing to compare")
    mean = math.fsum(d.delta for d in deltas) / len(deltas)
    return Verdict(mean_delta=mean, worst=min(deltas, key=lambda d: d.delta), tolerance=tolerance)
