"""Shared fixtures for model tests: models built once per session, varied test images."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from anyrestore.models import create_model


@pytest.fixture(scope="session")
def built_model() -> Callable[[str], nn.Module]:
    """A seeded eval-mode model per variant, built once; tests must not modify it."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = create_model(name).eval()
        return cache[name]

    return get


@pytest.fixture(scope="session")
def make_images() -> Callable[..., torch.Tensor]:
    """``make_images(b, h, w, seed=0)``: a seeded batch of different-looking images."""
    return varied_images


def varied_images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] that differ in content: gradients blended with more or less noise."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xx = torch.linspace(0, 1, w)[None, :].expand(h, w)
    images = []
    for i in range(b):
        base = torch.stack([yy, xx, (yy + xx) / 2]).roll(i, dims=0)
        noise = torch.rand(3, h, w, generator=g)
        mix = (i % 4) / 3
        images.append((1 - mix) * base + mix * noise)
    return torch.stack(images).clamp(0, 1)
