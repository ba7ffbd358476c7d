"""Named, seeded, vectorised degradations that run on CPU or GPU (see docs/degradations.md).

``degrade(clean, kind, seed=...)`` synthesises the degradations of the papers' all-in-one
settings (AnyIR App. A.1, ClusIR Sec. 4.1): Gaussian noise at sigma 15/25/50, rain, haze, motion
blur, low light, and the CDD-11 composites of low light, haze, rain and snow; JPEG as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from anyrestore.data.degradations._rng import Draw, make_generator
from anyrestore.data.degradations.blur import SLIGHT_BLUR_EXTENT, motion_blur
from anyrestore.data.degradations.jpeg import jpeg
from anyrestore.data.degradations.kinds import (
    CDD11,
    CLEAN,
    PHYSICAL_ORDER,
    SINGLE_KINDS,
    SLIGHT_BLUR,
    TRAINING_ONLY,
    canonical_kind,
    kind_key,
    list_kinds,
    parse_kind,
)
from anyrestore.data.degradations.light import low_light
from anyrestore.data.degradations.noise import gaussian_noise
from anyrestore.data.degradations.weather import haze, mist, rain, snow

__all__ = [
    "SINGLE_KINDS",
    "CLEAN",
    "SLIGHT_BLUR",
    "TRAINING_ONLY",
    "CDD11",
    "PHYSICAL_ORDER",
    "degrade",
    "degrade_batch",
    "list_kinds",
    "parse_kind",
    "canonical_kind",
    "kind_key",
    "add_mist",
]

_APPLY: dict[str, Callable[[Tensor, Draw], Tensor]] = {
    "noise_15": partial(gaussian_noise, sigma=15.0),
    "noise_25": partial(gaussian_noise, sigma=25.0),
    "noise_50": partial(gaussian_noise, sigma=50.0),
    "rain": rain,
    "haze": haze,
    "blur": motion_blur,
    "low_light": low_light,
    "snow": snow,
    "jpeg": jpeg,
    CLEAN: lambda x, draw: x,  # the identity pair: "leave an undamaged photo alone"
    SLIGHT_BLUR: partial(motion_blur, extent=SLIGHT_BLUR_EXTENT),
}


def _check(clean: Tensor) -> None:
    if not isinstance(clean, Tensor) or not clean.is_floating_point():
        raise ValueError("degrade expects a float tensor in [0, 1]")
    if clean.dim() not in (3, 4) or clean.shape[-3] != 3:
        raise ValueError(f"degrade expects (3, h, w) or (b, 3, h, w), got {tuple(clean.shape)}")


def degrade(
    clean: Tensor,
    kind: str,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Degrade ``clean`` ((b,3,h,w) or (3,h,w), float in [0,1]) by ``kind``; same shape, in [0,1].

    Composites are applied in ``PHYSICAL_ORDER`` whatever order they are written in. Each image
    of a batch draws its own parameters. The result is fixed by ``seed`` (a fresh generator on
    the input's device, so CPU and CUDA give different but each reproducible results) or by
    ``generator``; with neither, torch's global RNG is used.
    """
    _check(clean)
    names = parse_kind(kind)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    single = clean.dim() == 3
    x = clean.unsqueeze(0) if single else clean
    dtype = x.dtype
    x = x.float().nan_to_num(0.0).clamp(0, 1)  # clamp alone would keep a NaN
    if seed is not None:
        generator = make_generator(seed, x.device)
    draw = Draw(generator, x.device, x.shape[0])
    for name in names:
        x = _APPLY[name](x, draw).clamp(0, 1)
    x = x.to(dtype)
    return x.squeeze(0) if single else x


def add_mist(clean: Tensor, *, generator: torch.Generator) -> Tensor:
    """``clean`` ((3, h, w) in [0, 1]) under a light mist drawn from ``generator``: scene, not damage.

    For training only (``misty_scenes``); see ``weather.mist``.
    """
    _check(clean)
    x = clean.unsqueeze(0).float()
    return mist(x, Draw(generator, x.device, 1)).clamp(0, 1).to(clean.dtype).squeeze(0)


def degrade_batch(
    clean: Tensor,
    kinds: Sequence[str],
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Degrade image ``i`` of a collated batch by ``kinds[i]`` (one ``degrade`` call per kind).

    For training loops that degrade on the GPU: collate clean crops and their kinds, then call
    this on the device.
    """
    _check(clean)
    if clean.dim() != 4 or len(kinds) != clean.shape[0]:
        raise ValueError("degrade_batch expects (b, 3, h, w) and one kind per image")
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        generator = make_generator(seed, clean.device)
    out = torch.empty_like(clean)
    groups: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        groups.setdefault(canonical_kind(kind), []).append(i)
    for kind in sorted(groups):  # sorted: the generator is consumed in a fixed order
        idx = torch.tensor(groups[kind], device=clean.device)
        out[idx] = degrade(clean[idx], kind, generator=generator)
    return out
