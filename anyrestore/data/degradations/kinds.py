"""Degradation names, CDD-11 labels, and parsing of composites into the physical order."""

from __future__ import annotations

from collections.abc import Iterable

SINGLE_KINDS: tuple[str, ...] = (
    "noise_15",
    "noise_25",
    "noise_50",
    "rain",
    "haze",
    "blur",
    "low_light",
    "snow",
    "jpeg",
)

#: Not a degradation: the photo as it is. A training kind only (``[data.kinds] clean = w``): a
#: model that never sees an undamaged input learns that every input needs changing, and darkens
#: or re-tones clean and merely blurred photos. Not in ``list_kinds``; it cannot be combined.
CLEAN = "clean"

#: Camera shake of 2-9 px instead of ``blur``'s 5-21: a training kind only, so a model learns how
#: little to sharpen a photo that is only slightly blurred. Not in ``list_kinds``: the benchmark
#: suites keep the papers' kinds. It cannot be combined either.
SLIGHT_BLUR = "slight_blur"

#: The kinds that exist for training mixes only; each stands alone.
TRAINING_ONLY: tuple[str, ...] = (CLEAN, SLIGHT_BLUR)

# CDD-11 (OneRestore, ECCV 2024) in the papers' table order: label -> composite.
CDD11: dict[str, str] = {
    "L": "low_light",
    "H": "haze",
    "R": "rain",
    "S": "snow",
    "L+H": "low_light+haze",
    "L+R": "low_light+rain",
    "L+S": "low_light+snow",
    "H+R": "haze+rain",
    "H+S": "haze+snow",
    "L+H+R": "low_light+haze+rain",
    "L+H+S": "low_light+haze+snow",
}

# How light reaches the sensor: the scene (haze), then what falls in front of the camera,
# then the optics (blur), exposure, sensor noise and finally compression.
PHYSICAL_ORDER: tuple[str, ...] = (
    "haze",
    "rain",
    "snow",
    "blur",
    "low_light",
    "noise_15",
    "noise_25",
    "noise_50",
    "jpeg",
)

_LETTERS = {label: name for label, name in CDD11.items() if "+" not in label}


def list_kinds() -> list[str]:
    """Every name ``degrade`` accepts as is: the single kinds, then the CDD-11 labels.

    Any "+"-joined combination of single kinds (or of the letters L, H, R, S) works as well.
    """
    return list(SINGLE_KINDS) + list(CDD11)


def _unknown(token: str, kind: str) -> ValueError:
    known = ", ".join(SINGLE_KINDS)
    letters = ", ".join(f"{k}={v}" for k, v in _LETTERS.items())
    return ValueError(
        f"unknown degradation {token!r} in {kind!r}; known: {known}; "
        f"CDD-11 letters: {letters}; combine with '+', e.g. 'haze+rain' or 'L+H+S'"
    )


def parse_kind(kind: str | Iterable[str]) -> tuple[str, ...]:
    """The single kinds making up ``kind``, deduplicated into the order they are applied.

    ``kind`` is a single name, a "+"-joined composite in any order, a CDD-11 label, or a
    sequence of those; a ``TRAINING_ONLY`` kind alone gives itself. Raises ValueError naming the known
    kinds for anything else, for a kind named twice and for two noise levels at once.
    """
    if isinstance(kind, str):
        text = kind
        tokens = kind.split("+")
    else:
        tokens = [t for part in kind for t in str(part).split("+")]
        text = "+".join(tokens)
    stripped = [t.strip() for t in tokens]
    if len(stripped) == 1 and stripped[0] in TRAINING_ONLY:
        return (stripped[0],)
    names: list[str] = []
    for raw in tokens:
        token = raw.strip()
        name = _LETTERS.get(token, token)
        if name in TRAINING_ONLY:
            raise ValueError(
                f"{name!r} is a training-only kind and cannot be combined, in {text!r}"
            )
        if name not in SINGLE_KINDS:
            raise _unknown(token, text)
        if name in names:
            raise ValueError(f"degradation {name!r} appears twice in {text!r}")
        names.append(name)
    if sum(n.startswith("noise_") for n in names) > 1:
        raise ValueError(f"{text!r} names more than one noise level")
    return tuple(sorted(names, key=PHYSICAL_ORDER.index))


def canonical_kind(kind: str | Iterable[str]) -> str:
    """One spelling per composite, e.g. 'L+H' and 'low_light+haze' both give 'haze+low_light'."""
    return "+".join(parse_kind(kind))


def kind_key(label: str) -> str:
    """What two spellings of one kind have in common: ``canonical_kind`` for a degradation
    ('L+H', 'low_light+haze'), the label itself for anything else (a dataset's task name
    such as 'noise', or 'paired')."""
    try:
        return canonical_kind(label)
    except ValueError:
        return label
