"""The evaluation suites: which test sets (or synthetic degradations) make up each table.

``three``, ``five`` and ``cdd11`` follow Tab. 1, 2 and 3 of AnyIR (and Tab. 1, 2, 6 of
ClusIR): PSNR/SSIM on full RGB images per test set, and the average over the test sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anyrestore.data.degradations.kinds import CDD11
from anyrestore.errors import UsageError


@dataclass(frozen=True)
class Task:
    """One row of a quality table: a test set (or degradation kind) scored on its own."""

    kind: str  # key in results and JSON, e.g. "sots", "cbsd68_25", "L+H", "noise_25"
    title: str  # what the table shows
    data_kind: str  # the degradation kind anyrestore.data gives these images, e.g. "haze"


CDD11_KINDS = ("L", "H", "R", "S", "L+H", "L+R", "L+S", "H+R", "H+S", "L+H+R", "L+H+S")
_CDD11_NAMES = {"L": "Low", "H": "Haze", "R": "Rain", "S": "Snow"}


def _cdd11_title(kind: str) -> str:
    if "+" in kind:
        return f"CDD-11 {kind}"
    return f"CDD-11 {_CDD11_NAMES[kind]} ({kind})"


_SOTS = Task("sots", "Dehazing SOTS", "haze")
_RAIN = Task("rain100l", "Deraining Rain100L", "rain")


def _cbsd68(sigma: int) -> Task:
    return Task(f"cbsd68_{sigma}", f"Denoising CBSD68 σ={sigma}", f"noise_{sigma}")


PAPER_SUITES: dict[str, tuple[Task, ...]] = {
    # AnyIR Tab. 1: dehazing, deraining, denoising at three noise levels.
    "three": (_SOTS, _RAIN, _cbsd68(15), _cbsd68(25), _cbsd68(50)),
    # AnyIR Tab. 2: adds deblurring and low-light; denoising at sigma 25 only.
    "five": (
        _SOTS,
        _RAIN,
        _cbsd68(25),
        Task("gopro", "Deblurring GoPro", "blur"),
        Task("lol", "Low-light LOL-v1", "low_light"),
    ),
    # AnyIR Tab. 3: the CDD-11 test split, one row per degradation combination.
    "cdd11": tuple(Task(k, _cdd11_title(k), k) for k in CDD11_KINDS),
}

#: What the synthetic suite applies to clean photos: every CDD-11 type, noise, blur.
SYNTHETIC_KINDS = (*CDD11_KINDS, "noise_15", "noise_25", "noise_50", "blur")

_SYNTHETIC_TITLES = {
    "noise_15": "Noise σ=15",
    "noise_25": "Noise σ=25",
    "noise_50": "Noise σ=50",
    "blur": "Blur",
}

SYNTHETIC_TASKS: tuple[Task, ...] = tuple(
    Task(k, _SYNTHETIC_TITLES.get(k) or _cdd11_title(k).replace("CDD-11", "Synthetic"), k)
    for k in SYNTHETIC_KINDS
)

QUALITY_SUITES = (*PAPER_SUITES, "synthetic")
ALL_SUITES = (*QUALITY_SUITES, "speed")


def suite_tasks(suite: str) -> tuple[Task, ...]:
    """The rows of a quality suite, in the papers' column order."""
    if suite in PAPER_SUITES:
        return PAPER_SUITES[suite]
    if suite == "synthetic":
        return SYNTHETIC_TASKS
    raise UsageError(f"unknown quality suite {suite!r}; choose one of {', '.join(QUALITY_SUITES)}")


#: The recipes' names of CDD-11's kinds, in any order, to the table's labels: rain -> R,
#: haze+snow or snow+haze -> H+S.
_LABEL_OF = {frozenset(names.split("+")): label for label, names in CDD11.items()}


def select_tasks(suite: str, kinds: Sequence[str] | None = None) -> tuple[Task, ...]:
    """The rows of ``suite`` named in ``kinds`` (all of them for None), in the suite's order.

    Scoring a few rows (``--kinds H+S,L+S``) costs a fraction of the whole table, which is what
    checking a candidate against the rows it might lose needs.
    """
    tasks = suite_tasks(suite)
    if kinds is None:
        return tasks
    known = {t.kind for t in tasks}
    given = [k.strip() for k in kinds if k.strip()]
    wanted = [k if k in known else _LABEL_OF.get(frozenset(k.split("+")), k) for k in given]
    unknown = [g for g, k in zip(given, wanted, strict=True) if k not in known]
    if unknown or not wanted:
        what = f"unknown kind {unknown[0]!r}" if unknown else "no kinds given"
        raise UsageError(
            f"{what} for --suite {suite}; choose from {', '.join(t.kind for t in tasks)}"
        )
    return tuple(t for t in tasks if t.kind in wanted)
