"""Training can start from a shipped checkpoint (``train.init_from``) instead of random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import SMOKE

from anyrestore.errors import ConfigError
from anyrestore.models import create_model
from anyrestore.training import load_config, train
from anyrestore.training.state import load_state
from anyrestore.weights.checkpoint import save_checkpoint

TINY = {"dim": 8, "blocks": (1, 1, 1, 1), "refinement_blocks": 1}


def _config(photos: Path, out: Path, init: Path, steps: int = 1, lr: float = 1e-9):
    return load_config(
        SMOKE,
        [
            f"data.root={photos}",
            f"out={out}",
            "log.progress=false",
            f"train.steps={steps}",
            f"optim.lr={lr}",
            f"train.init_from={init}",
        ],
    )


def test_init_from_starts_from_the_checkpoint_weights(photos: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)  # different from the run's seed, so random init would differ
    source = create_model("anyir_t", **TINY)
    init = save_checkpoint(source, tmp_path / "init.safetensors")
    result = train(_config(photos, tmp_path / "run", init))
    trained = load_state(result.checkpoint)["model"]
    for key, value in source.state_dict().items():
        # One step at lr 1e-9 moves no weight by more than ~1e-9: these are the initial ones.
        assert torch.allclose(trained[key], value, atol=1e-6), key
    torch.manual_seed(0)
    fresh = create_model("anyir_t", **TINY).state_dict()
    assert any(not torch.allclose(fresh[k], v, atol=1e-3) for k, v in source.state_dict().items())


def test_init_from_rejects_another_config(photos: Path, tmp_path: Path) -> None:
    other = create_model("anyir_t", **{**TINY, "dim": 12})
    init = save_checkpoint(other, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="init_from"):
        train(_config(photos, tmp_path / "run", init))
