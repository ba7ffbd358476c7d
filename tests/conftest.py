"""Fixtures shared across test folders; keep them generic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_ANYIR = {"dim": 8, "blocks": (1, 1, 1, 1), "refinement_blocks": 1}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded anyir_t checkpoint with a tiny config (random weights), for CLI and engine tests."""
    from anyrestore.models import create_model
    from anyrestore.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_checkpoint(create_model("anyir_t", **TINY_ANYIR), path)
