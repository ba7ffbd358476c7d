"""Random draws on the input's device from one seeded generator, so a seed fixes a result."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Draw:
    """Draws per-image parameters and random fields for a batch of ``b`` images on ``device``.

    Numbers come from ``generator`` (on its own device, moved if it differs from ``device``) or
    from torch's global RNG on ``device`` when there is none.
    """

    def __init__(self, generator: torch.Generator | None, device: torch.device, b: int) -> None:
        self.generator = generator
        self.device = device
        self.b = b
        self._gen_device = generator.device if generator is not None else device

    def _finish(self, t: Tensor) -> Tensor:
        return t if t.device == self.device else t.to(self.device)

    def rand(self, *shape: int) -> Tensor:
        return self._finish(torch.rand(shape, generator=self.generator, device=self._gen_device))

    def randn(self, *shape: int) -> Tensor:
        return self._finish(torch.randn(shape, generator=self.generator, device=self._gen_device))

    def uniform(self, lo: float, hi: float) -> Tensor:
        """One value per image, shape (b,)."""
        return lo + (hi - lo) * self.rand(self.b)

    def log_uniform(self, lo: float, hi: float) -> Tensor:
        """One value per image, uniform in log space (for densities spanning a decade)."""
        return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * self.rand(self.b))

    def integers(self, lo: int, hi: int) -> list[int]:
        """One int in [lo, hi] per image, as Python ints (for per-image CPU work such as JPEG)."""
        return [int(v) for v in torch.floor(self.uniform(lo, hi + 1 - 1e-6)).tolist()]


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (CPU and CUDA streams differ by design)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def expand(v: Tensor) -> Tensor:
    """(b,) -> (b, 1, 1, 1) for broadcasting against images."""
    return v.view(-1, 1, 1, 1)
