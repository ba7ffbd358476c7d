"""Export writes inference weights that rebuild the model and say how it was trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anyrestore.training import export_checkpoint
from anyrestore.training.state import load_state
from anyrestore.weights.authoring import manifest_entry_for
from anyrestore.weights.checkpoint import load_checkpoint, read_metadata


def test_export_rebuilds_the_model_with_training_facts(smoke_run, tmp_path: Path) -> None:
    config, result = smoke_run
    path, facts = export_checkpoint(result.checkpoint, tmp_path / "smoke.safetensors", dtype="fp32")
    state = load_state(result.checkpoint)

    model = load_checkpoint(path)  # the file alone: arch + config from its metadata
    assert model.arch == "anyir" and model.config.dim == 8
    # EMA was on, so the exported weights are the EMA copy, bit for bit in fp32.
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["ema"]["model"][key].float()), key
    assert any(
        not torch.equal(state["ema"]["model"][k], state["model"][k]) for k in state["model"]
    ), "EMA weights should differ from the raw ones"

    meta = read_metadata(path)
    training = json.loads(meta["training"])
    assert meta["model"] == "anyir_t" and meta["name"] == "anyir_t"
    assert sorted(json.loads(meta["trained_for"])) == sorted(config.data.kinds)
    assert training["steps"] == config.train.steps == training["total_steps"]
    assert training["samples_seen"] == config.train.steps * config.train.batch_size
    assert training["config_sha256"] == config.digest()
    assert training["ema"] is True and training["val_psnr"] == round(result.val_psnr, 3)
    for key in ("hardware", "wall_time_s", "date", "dataset", "loss", "schedule", "precision"):
        assert training[key] not in (None, ""), key
    assert training["loss"] == "1*l1 + 0.1*fourier + model aux"

    # ... and is ready for `anyrestore weights add`.
    entry = manifest_entry_for(
        path, name="smoke-test", license="MIT", repo_id="org/weights", revision="0" * 40
    )
    assert 'model = "anyir_t"' in entry and "[weights.training]" in entry


def test_training_only_kinds_are_training_facts_not_degradations_restored(
    smoke_run, tmp_path: Path
) -> None:
    _, result = smoke_run
    state = load_state(result.checkpoint)
    state["progress"]["kinds"] = [*state["progress"]["kinds"], "clean", "slight_blur"]
    torch.save(state, tmp_path / "with_clean.pt")
    path, facts = export_checkpoint(tmp_path / "with_clean.pt", tmp_path / "w.safetensors")
    meta = read_metadata(path)
    for kind in ("clean", "slight_blur"):
        assert kind in facts["kinds"] and kind in json.loads(meta["training"])["kinds"]
    trained_for = json.loads(meta["trained_for"])
    assert trained_for == [k for k in facts["kinds"] if k not in ("clean", "slight_blur")]
    assert "clean" not in trained_for and "slight_blur" not in trained_for


def test_export_defaults_to_fp16_and_can_skip_ema(smoke_run, tmp_path: Path) -> None:
    _, result = smoke_run
    path, facts = export_checkpoint(result.out, tmp_path / "raw.safetensors", use_ema=False)
    state = load_state(result.checkpoint)
    model = load_checkpoint(path)
    assert facts["ema"] is False
    assert "val_psnr" not in facts  # the run's validation scored its EMA, not these weights
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, state["model"][key].half().float()), key


def test_a_run_recorded_by_an_older_version_still_exports_and_resumes(
    smoke_run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # last.pt files of 2026-11-29/30 record data.plain_scenes, a setting since removed: the
    # strict recipe check refused their export and resume ("unknown config key") for good.
    from anyrestore.training import load_config, train
    from anyrestore.training.config import recorded_config

    config, result = smoke_run
    state = load_state(result.checkpoint)
    state["config_toml"] = state["config_toml"].replace("[data]\n", "[data]\nplain_scenes = []\n")
    old = tmp_path / "old" / "last.pt"
    old.parent.mkdir()
    torch.save(state, old)
    with caplog.at_level("WARNING", logger="anyrestore"):
        path, facts = export_checkpoint(old, tmp_path / "old.safetensors")
    assert path.is_file() and facts["steps"] == config.train.steps
    state["torch"] = "2.99.0+trained-elsewhere"  # the export names the training's torch
    torch.save(state, old)
    assert export_checkpoint(old, tmp_path / "o2.safetensors")[1]["torch"] == state["torch"]
    assert "no longer knows (data.plain_scenes); left out" in caplog.text
    base = recorded_config(state["config_toml"])
    more = load_config(
        None, [f"out={old.parent}", f"train.steps={config.train.steps + 1}"], base=base
    )
    assert train(more, resume=old).step == config.train.steps + 1


def test_a_run_of_another_model_layout_names_the_keys_that_differ(
    smoke_run, tmp_path: Path
) -> None:
    # A run trained before a model's layout changed: one line naming what differs, no
    # traceback, no file.
    from anyrestore.errors import WeightsError

    _, result = smoke_run
    state = load_state(result.checkpoint)
    for weights in (state["model"], state["ema"]["model"]):
        weights["renamed.weight"] = weights.pop(next(iter(weights)))
    old = tmp_path / "old" / "last.pt"
    old.parent.mkdir()
    torch.save(state, old)
    with pytest.raises(WeightsError, match=r"renamed\.weight"):
        export_checkpoint(old, tmp_path / "old.safetensors")
    assert not (tmp_path / "old.safetensors").exists()


def test_export_writes_only_safetensors_names(smoke_run, tmp_path: Path) -> None:
    from anyrestore.errors import UsageError

    _, result = smoke_run
    with pytest.raises(UsageError, match=r"\.safetensors file"):
        export_checkpoint(result.checkpoint, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
