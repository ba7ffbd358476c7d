"""One entry point for a bench run: resolve the models, pick the images, measure."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from anyrestore.bench.candidates import (
    Candidate,
    build_restorer,
    parse_baselines,
    resolve_candidates,
)
from anyrestore.bench.quality import Pair, run_quality
from anyrestore.bench.speed import DEFAULT_SIZES, parse_sizes, run_speed
from anyrestore.bench.suites import ALL_SUITES, PAPER_SUITES, select_tasks
from anyrestore.bench.synthetic import (
    DEFAULT_MAX_SIDE,
    check_photo_sizes,
    find_photos,
    synthetic_pairs,
)
from anyrestore.errors import UsageError
from anyrestore.metrics import SSIM_WINDOW


@dataclass
class BenchConfig:
    """Everything a bench run needs; the CLI fills it from its options."""

    suite: str = "synthetic"
    models: Sequence[str] = ()
    weights: Sequence[str | os.PathLike[str]] = ()
    baseline: str | Sequence[str] | None = None  # "identity", "classical", both, or a comma list
    random_init: bool = False
    device: str = "auto"
    precision: str | None = None  # None: fp32 for quality suites (as the papers), auto for speed
    runtime: str | None = None  # None: torch for quality suites, auto for speed
    tile: int | None = None  # quality: None whole images (as the papers); speed: tiled sizes only
    overlap: int | None = None  # None: the model's tile_overlap_hint
    # quality suites
    data_root: str | os.PathLike[str] | None = None
    images: str | os.PathLike[str] | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    y_channel: bool = False
    limit: int | None = None  # at most this many images per degradation kind
    kinds: Sequence[str] | None = None  # only these rows of the suite (None: all)
    save_images: str | os.PathLike[str] | None = None
    per_image: bool = False  # also one record per (model, kind, image)
    # speed suite
    sizes: Sequence[str] = field(default_factory=lambda: list(DEFAULT_SIZES))
    repeats: int = 5
    warmup: int = 1


def run_bench(
    config: BenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Run ``config.suite`` and return one record per (model, kind) or (model, size)."""
    if config.suite not in ALL_SUITES:
        raise UsageError(f"unknown suite {config.suite!r}; choose one of {', '.join(ALL_SUITES)}")
    parse_baselines(config.baseline)  # an unknown name fails before any image is read
    if config.limit is not None and config.limit < 1:
        raise UsageError("--limit must be >= 1")
    if config.max_side is not None and config.max_side < SSIM_WINDOW:
        raise UsageError(
            f"--max-side must be 0 (keep sizes) or at least {SSIM_WINDOW} px (SSIM's window), "
            f"got {config.max_side}"
        )
    if config.suite == "speed":
        quality_only = {
            "--per-image": config.per_image,
            "--kinds": config.kinds is not None,
            "--images": config.images is not None,
            "--data-root": config.data_root is not None,
            "--save-images": config.save_images is not None,
            "--y-channel": config.y_channel,
            "--limit": config.limit is not None,
        }
        given = [option for option, set_ in quality_only.items() if set_]
        if given:  # a speed run times made-up images: these would be ignored without a word
            raise UsageError(f"{given[0]} is for the quality suites, not speed")
        return _speed(config, progress)
    return _quality(config, progress)


def _candidates(
    config: BenchConfig,
    precision: str,
    tile: int | None,
    runtime: str,
    *,
    baselines: bool = True,
    kinds: Sequence[str] | None = None,
) -> list[Candidate]:
    return resolve_candidates(
        config.models,
        config.weights,
        baseline=config.baseline if baselines else None,
        random_init=config.random_init,
        device=config.device,
        precision=precision,
        runtime=runtime,
        tile=tile,
        overlap=config.overlap,
        kinds=kinds,
    )


def _quality(config: BenchConfig, progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    tasks = select_tasks(config.suite, config.kinds)
    if config.suite in PAPER_SUITES:
        if config.data_root is None:
            raise UsageError(f"--suite {config.suite} needs --data-root DIR (see docs/bench.md)")
        if config.images is not None:
            raise UsageError("--images is for --suite synthetic; use --data-root for the test sets")
        from anyrestore.bench.sources import paper_pairs

        pairs = paper_pairs(config.suite, config.data_root, limit=config.limit, tasks=tasks)
        total = None
    else:
        if config.data_root is not None:
            raise UsageError("--data-root is for the test-set suites; use --images for synthetic")
        photos = find_photos(config.images)  # fail on a bad folder before loading any model
        if config.limit is not None:
            photos = photos[: config.limit]
        check_photo_sizes(photos, config.max_side)
        kinds = [t.kind for t in tasks]
        pairs = synthetic_pairs(kinds, photos, max_side=config.max_side)
        total = len(photos) * len(kinds)
    candidates = _candidates(
        config,
        config.precision or "fp32",
        config.tile or 0,
        config.runtime or "torch",
        kinds=[t.data_kind for t in tasks],
    )
    done = 0

    def on_pair(pair: Pair) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            of = f"/{total}" if total else ""
            progress(f"{config.suite}: {done}{of} {pair.kind} {pair.name}")

    return run_quality(
        candidates,
        tasks,
        pairs,
        suite=config.suite,
        y_channel=config.y_channel,
        save_dir=config.save_images,
        on_pair=on_pair,
        per_image=config.per_image,
    )


def _speed(config: BenchConfig, progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    sizes = parse_sizes(config.sizes)
    if config.baseline and not (config.models or config.weights):
        raise UsageError("the speed suite times models; give --model or --weights")
    # Several precisions (``auto,fp32,bf16``) are timed side by side, one candidate each.
    precisions = [p.strip() for p in (config.precision or "auto").split(",") if p.strip()]
    if not precisions:
        raise UsageError(f"--precision names no precision: {config.precision!r}")
    candidates: list[Candidate] = []
    for precision in precisions:
        # whole images; tiled sizes: below
        # Baselines are not timed, so the speed suite does not build them (nor need the
        # classical one's extra).
        for cand in _candidates(config, precision, 0, config.runtime or "auto", baselines=False):
            if len(precisions) > 1:
                cand.label = f"{cand.label} [{precision}]"
            candidates.append(cand)

    def make_tiled(cand: Candidate) -> Callable[[Tensor], Tensor]:
        assert cand.model is not None
        return build_restorer(
            cand.model,
            device=cand.device,
            precision=cand.precision,
            runtime=cand.runtime,
            tile=config.tile,  # None: the engine's automatic tile size for the device
            overlap=config.overlap,
        ).restore_tensor

    return run_speed(
        candidates,
        sizes,
        repeats=config.repeats,
        warmup=config.warmup,
        make_tiled=make_tiled,
        on_step=progress,
    )
