"""Building a run: the device it asks for, the paths its recipe names, a resumed scaler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anyrestore.training import load_config


def test_a_gpu_index_beyond_those_present_is_a_device_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from anyrestore.errors import DeviceError
    from anyrestore.training.setup import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="cuda:3.*only 1 CUDA device"):
        pick_device("cuda:3")


def test_files_named_in_a_recipe_become_absolute_and_weights_names_stay_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyrestore.training.setup import absolute_paths

    monkeypatch.chdir(tmp_path)
    Path("start.safetensors").write_bytes(b"")
    config = load_config(
        None,
        [
            "model=anyir_t",
            "data.root=corpus/train",
            "train.init_from=start.safetensors",
            "distill.teacher=anyir_t-synthetic-v6",
        ],
    )
    fixed = absolute_paths(config)
    assert fixed.data.root == str(tmp_path / "corpus" / "train")
    assert fixed.train.init_from == str(tmp_path / "start.safetensors")
    assert fixed.distill.teacher == "anyir_t-synthetic-v6"
    assert config.data.root == "corpus/train"  # the caller's config is left as it was


def test_a_run_saved_without_loss_scaling_resumes_with_it() -> None:
    # A bf16 or fp32 run saves an empty scaler state; resumed in fp16 (a GPU without bf16
    # under precision "auto") the scaler starts afresh instead of failing the resume.
    from anyrestore.training.setup import load_scaler

    saved = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler(scaler, saved)
    assert scaler.get_scale() == torch.amp.GradScaler("cpu", enabled=True).get_scale()
    scaled = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    load_scaler(scaler, scaled.state_dict())
    assert scaler.get_scale() == 8.0
