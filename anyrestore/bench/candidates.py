"""What a bench run measures: models resolved from names or files, and the identity baseline."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from anyrestore.errors import UsageError

IDENTITY = "identity"


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

    @property
    def is_baseline(self) -> bool:
        return self.model is None


def identity_candidate() -> Candidate:
    """Scores the degraded input itself, so every table shows what a model gains."""
    return Candidate(IDENTITY, "baseline", lambda x: x)


def _unique(label: str, taken: set[str]) -> str:
    out, i = label, 2
    while out in taken:
        out, i = f"{label}#{i}", i + 1
    taken.add(out)
    return out


def build_restorer(
    model: nn.Module, *, device: str, precision: str, tile: int | None, overlap: int | None
) -> tuple[Callable[[Tensor], Tensor], str, str]:
    """The engine's ``restore_tensor`` for ``model``, its device and its compute path.

    ``tile``: 0 whole images, N tiles of N pixels, None the engine's automatic choice.
    """
    from anyrestore.engine import Restorer

    restorer = Restorer(model, device=device, precision=precision, tile=tile, overlap=overlap)
    return restorer.restore_tensor, str(restorer.device), restorer.describe()


def resolve_candidates(
    models: Sequence[str] = (),
    weights: Sequence[str | os.PathLike[str]] = (),
    *,
    baseline: str | None = None,
    random_init: bool = False,
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = 0,
    overlap: int | None = None,
) -> list[Candidate]:
    """Build every candidate of a run: baseline first, then ``models``, then ``weights`` files.

    ``models`` are weights refs for ``load_weights`` (a model name, a manifest entry or a
    file), or registry names built untrained with ``random_init``. With nothing given, the
    default weights are used.
    """
    if baseline not in (None, IDENTITY):
        raise UsageError(f"unknown baseline {baseline!r}; the only baseline is {IDENTITY!r}")
    if random_init and not models:
        raise UsageError("--random-init needs at least one --model NAME from `anyrestore models`")
    out: list[Candidate] = []
    taken: set[str] = set()
    if baseline:
        out.append(identity_candidate())
        taken.add(IDENTITY)

    loaded: list[tuple[str, str, nn.Module]] = []
    for ref in models:
        if random_init:
            loaded.append((ref, "random-init", _random_init(ref)))
        else:
            loaded.append((_ref_label(ref), str(ref), _load_ref(ref)))
    for path in weights:
        loaded.append((Path(path).stem, str(path), _load_file(path)))
    if not loaded and not baseline:
        loaded.append(("default", "default", _load_ref(None)))

    for label, source, model in loaded:
        restore, dev, compute = build_restorer(
            model, device=device, precision=precision, tile=tile, overlap=overlap
        )
        out.append(Candidate(_unique(label, taken), source, restore, model, dev, compute))
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
    from anyrestore.weights.checkpoint import load_checkpoint

    return load_checkpoint(path).eval()
