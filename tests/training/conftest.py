"""Tiny image folders and a shared tiny training run for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import SMOKE, make_photos


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos") / "clean")


@pytest.fixture(scope="session")
def smoke_run(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    """configs/smoke.toml trained once on the tiny folder (EMA on, so export has it to write)."""
    from anyrestore.training import load_config, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("smoke") / "run"
    config = load_config(
        SMOKE,
        [f"data.root={photos}", f"out={out}", "log.progress=false", "train.ema_decay=0.9"],
    )
    result = train(config)
    return config, result
