"""What a bench run measures: models resolved from names or files, and the baselines.

Baselines: ``identity`` scores the degraded input itself; ``classical`` scores classical
restorers told the degradation (``anyrestore.bench.classical``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from anyrestore.errors import UsageError

if TYPE_CHECKING:
    from anyrestore.engine import Restorer

IDENTITY = "identity"
CLASSICAL = "classical"
BASELINES = (IDENTITY, CLASSICAL)


@dataclass
class Candidate:
    """A named way to turn a degraded image (3, h, w) into a restored one, on CPU in [0, 1]."""

    label: str
    source: str  # where the model came from: a weights ref, a file, "random-init", "baseline"
    restore: Callable[[Tensor], Tensor]
    model: nn.Module | None = None
    device: str = "cpu"
    #: How the engine runs it: device, precision, layout and why (``ComputePath.describe``).
    compute: str = ""
    #: The precision it was asked for ("auto", "fp32", ...), to build its tiled twin with.
    precision: str = "auto"
    #: The runtime it was asked for ("auto", "torch", "openvino"), likewise.
    runtime: str = "torch"
    #: Calls on a new size before the path is the one later calls take (``Restorer``).
    calls_to_settle: int = 1
    #: For a restorer told the degradation: called with the image and its kind instead.
    restore_known: Callable[[Tensor, str], Tensor] | None = None

    @property
    def is_baseline(self) -> bool:
        return self.model is None

    def apply(self, degraded: Tensor, kind: str) -> Tensor:
        """Restore ``degraded``, degraded by ``kind`` (used only by restorers told the kind)."""
        if self.restore_known is not None:
            return self.restore_known(degraded, kind)
        return self.restore(degraded)


def identity_candidate() -> Candidate:
    """Scores the degraded input itself, so every table shows what a model gains."""
    return Candidate(IDENTITY, "baseline", lambda x: x)


def classical_candidate(kinds: Sequence[str] | None = None) -> Candidate:
    """Classical restorers told the degradation: CBM3D, dark channel prior, median, ...
    ``kinds``: those the run scores (what it needs installed), None for any."""
    from anyrestore.bench import classical

    classical.check_dependencies(kinds)

    def told(degraded: Tensor, kind: str) -> Tensor:
        image = degraded.permute(1, 2, 0).double().numpy()
        out = torch.from_numpy(classical.restore(image, kind).copy())
        return out.permute(2, 0, 1).to(degraded.dtype)

    def blind(_: Tensor) -> Tensor:
        raise UsageError("the classical baseline must be told the degradation kind")

    return Candidate(CLASSICAL, "baseline", blind, restore_known=told)


def parse_baselines(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Baseline names from repeated and/or comma-separated values, deduplicated, in given order."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    for name in names:
        if name not in BASELINES:
            raise UsageError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return tuple(dict.fromkeys(names))


def _unique(label: str, taken: set[str]) -> str:
    out, i = label, 2
    while out in taken:
        out, i = f"{label}#{i}", i + 1
    taken.add(out)
    return out


def build_restorer(
    model: nn.Module,
    *,
    device: str,
    precision: str,
    tile: int | None,
    overlap: int | None,
    runtime: str = "torch",
) -> Restorer:
    """The engine's ``Restorer`` for ``model``.

    ``tile``: 0 whole images, N tiles of N pixels, None the engine's automatic choice.
    """
    from anyrestore.engine import Restorer

    return Restorer(
        model, device=device, precision=precision, tile=tile, overlap=overlap, runtime=runtime
    )


def resolve_candidates(
    models: Sequence[str] = (),
    weights: Sequence[str | os.PathLike[str]] = (),
    *,
    baseline: str | Sequence[str] | None = None,
    random_init: bool = False,
    device: str = "auto",
    precision: str = "auto",
    runtime: str = "torch",
    tile: int | None = 0,
    overlap: int | None = None,
    kinds: Sequence[str] | None = None,
) -> list[Candidate]:
    """Build every candidate of a run: baselines first, then ``models``, then ``weights`` files.

    ``baseline``: "identity", "classical", or both (a sequence or a comma-separated string).
    ``models`` are weights refs for ``load_weights`` (a model name, a manifest entry or a
    file), or registry names built untrained with ``random_init``. With nothing given, the
    default weights are used. ``kinds``: the degradations the run scores, if known.
    """
    baselines = parse_baselines(baseline)
    if random_init and not models:
        raise UsageError("--random-init needs at least one --model NAME from `anyrestore models`")
    out: list[Candidate] = []
    taken: set[str] = set()
    for name in baselines:
        out.append(identity_candidate() if name == IDENTITY else classical_candidate(kinds))
    # A model named like a baseline, or like the reference images --save-images writes
    # beside its outputs (<photo>_clean.png, <photo>_degraded.png), gets a suffix.
    taken.update(BASELINES, ("clean", "degraded"))

    loaded: list[tuple[str, str, nn.Module]] = []
    for ref in models:
        if random_init:
            loaded.append((ref, "random-init", _random_init(ref)))
        else:
            loaded.append((_ref_label(ref), str(ref), _load_ref(ref)))
    for path in weights:
        loaded.append((Path(path).stem, str(path), _load_file(path)))
    if not loaded and not baselines:
        loaded.append(("default", "default", _load_ref(None)))

    for label, source, model in loaded:
        restorer = build_restorer(
            model, device=device, precision=precision, tile=tile, overlap=overlap, runtime=runtime
        )
        out.append(
            Candidate(
                _unique(label, taken),
                source,
                restorer.restore_tensor,
                model,
                str(restorer.device),
                restorer.describe(),
                precision=precision,
                runtime=runtime,
                calls_to_settle=restorer.calls_to_settle,
            )
        )
    return out


def _ref_label(ref: str) -> str:
    return Path(ref).stem if ref.endswith(".safetensors") else ref


def _random_init(name: str) -> nn.Module:
    from anyrestore.models import create_model, list_models

    if name not in list_models():
        raise UsageError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    torch.manual_seed(0)
    return create_model(name).eval()


def _load_ref(ref: str | None) -> nn.Module:
    from anyrestore.weights import load_weights

    return load_weights(ref).model


def _load_file(path: str | os.PathLike[str]) -> nn.Module:
    from anyrestore.weights import resolve_weights
    from anyrestore.weights.checkpoint import load_checkpoint

    # Through the same checks as `fix --weights`: a folder, a training run or a torch file
    # is named as such, with what to run instead.
    return load_checkpoint(resolve_weights(Path(path))).eval()
