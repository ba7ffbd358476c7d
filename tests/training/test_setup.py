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


def test_a_home_relative_data_root_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyrestore.training.setup import absolute_paths

    monkeypatch.setenv("HOME", str(tmp_path))
    fixed = absolute_paths(load_config(None, ["model=anyir_t", "data.root=~/photos"]))
    assert fixed.data.root == str(tmp_path / "photos")  # nothing later expands "~"
    # An absolute path stays as written: a resume compares it with the recorded one.
    written = absolute_paths(load_config(None, ["model=anyir_t", "data.root=/a/b/../c/"]))
    assert written.data.root == "/a/b/../c/"


def _state_of(*overrides: str) -> dict:
    return {"config_toml": load_config(None, ["model=anyir_t", *overrides]).to_toml()}


def test_a_new_loss_recipe_that_reshapes_an_auto_schedule_is_refused_on_resume() -> None:
    from anyrestore.errors import ConfigError
    from anyrestore.training.setup import check_resumable

    state = _state_of()  # recipe auto: AnyIR's cosine with a 10% warm-up
    same = load_config(None, ["model=anyir_t", "loss.recipe=anyir"])
    check_resumable(same, state, "run", "anyir")  # the same schedule by name: fine
    other = load_config(None, ["model=anyir_t", "loss.recipe=clusir"])
    with pytest.raises(ConfigError, match=r"loss.recipe \(it sets the schedule"):
        check_resumable(other, state, "run", "anyir")
    pinned = ["schedule.kind=cosine", "schedule.warmup=0.1"]  # the schedule said outright
    check_resumable(
        load_config(None, ["model=anyir_t", "loss.recipe=clusir", *pinned]),
        _state_of(*pinned),
        "run",
        "anyir",
    )


def test_a_setting_newer_than_the_run_does_not_block_its_resume() -> None:
    # A run recorded before optim.eps existed had its default; the same default now is no
    # change, another value is one.
    from anyrestore.errors import ConfigError
    from anyrestore.training.setup import check_resumable

    state = _state_of()
    state["config_toml"] = "\n".join(
        line for line in state["config_toml"].splitlines() if not line.startswith("eps ")
    )
    assert "\neps = " not in state["config_toml"] and "\ngrad_clip = " in state["config_toml"]
    check_resumable(load_config(None, ["model=anyir_t"]), state, "run", "anyir")
    with pytest.raises(ConfigError, match="optim.eps cannot change"):
        check_resumable(
            load_config(None, ["model=anyir_t", "optim.eps=0.1"]), state, "run", "anyir"
        )


def test_training_measures_bf16_against_the_fp32_it_would_run(
    bf16_probe_kernels: list[object],
) -> None:
    from anyrestore.models import create_model
    from anyrestore.models.layers.pointwise import pointwise_kernel
    from anyrestore.training.setup import pick_precision

    config = load_config(None, ["model=anyir_t", "train.precision=auto"])
    model = create_model("anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1)
    assert pick_precision(config, torch.device("cpu"), model)[0] == "fp32"
    assert bf16_probe_kernels == [pointwise_kernel]


def test_ddp_looks_for_unused_parameters_where_some_get_no_gradient() -> None:
    from tinymodels import TINY_ANYIR, TINY_CLUSIR

    from anyrestore.models import create_model
    from anyrestore.training.setup import find_unused

    anyir, clusir = create_model("anyir_t", **TINY_ANYIR), create_model("clusir_t", **TINY_CLUSIR)
    plain = load_config(None, ["model=anyir_t"])
    assert not find_unused(plain, anyir) and find_unused(plain, clusir)  # experts by routing
    blocks = ['distill.teacher="t.safetensors"', 'distill.blocks=["latent.*"]']
    only_blocks = load_config(None, ["model=anyir_t", *blocks, "distill.output_weight=0"])
    assert find_unused(only_blocks, anyir)  # layers after the last block learn nothing
    assert not find_unused(load_config(None, ["model=anyir_t", *blocks]), anyir)
    forced = [*blocks, "distill.teacher_forcing=true", "distill.output_weight=0"]
    assert not find_unused(
        load_config(None, ["model=anyir_t", *forced, "distill.target_weight=0"]), anyir
    )
