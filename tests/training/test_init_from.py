"""Training can start from a shipped checkpoint (``train.init_from``) instead of random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR as TINY
from trainkit import SMOKE, ship_as

from anyrestore.errors import ConfigError, WeightsError
from anyrestore.models import create_model
from anyrestore.training import export_checkpoint, load_config, train
from anyrestore.training.state import load_state
from anyrestore.weights.checkpoint import save_checkpoint
from anyrestore.weights.resolve import sha256_file


def _config(
    photos: Path, out: Path, init: Path | str, *extra: str, steps: int = 1, lr: float = 1e-9
):
    return load_config(
        SMOKE,
        [
            f"data.root={photos}",
            f"out={out}",
            "log.progress=false",
            f"train.steps={steps}",
            f"optim.lr={lr}",
            f"train.init_from={init}",
            *extra,
        ],
    )


def test_init_from_starts_from_the_checkpoint_weights(photos: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)  # different from the run's seed, so random init would differ
    source = create_model("anyir_t", **TINY)
    init = save_checkpoint(source, tmp_path / "init.safetensors")
    result = train(_config(photos, tmp_path / "run", init))
    trained = load_state(result.checkpoint)["model"]
    for key, value in source.named_parameters():
        # One step at lr 1e-9 moves no weight by more than ~1e-9: these are the initial ones
        # (batch-norm running statistics do move: they are not learned weights).
        assert torch.allclose(trained[key], value, atol=1e-6), key
    torch.manual_seed(0)
    fresh = create_model("anyir_t", **TINY).state_dict()
    assert any(not torch.allclose(fresh[k], v, atol=1e-3) for k, v in source.state_dict().items())


def test_init_from_takes_a_weights_name_wherever_the_run_starts(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A recipe can say "start from the shipped model" without knowing where it is installed.
    torch.manual_seed(123)
    source = create_model("anyir_t", **TINY)
    shipped = tmp_path / "package"
    shipped.mkdir()
    init = save_checkpoint(source, shipped / "tiny-v1.safetensors", name="anyir_t")
    monkeypatch.setenv("ANYRESTORE_MANIFEST", str(ship_as(init, "tiny-v1")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = _config(photos, tmp_path / "run", "tiny-v1", steps=2)
    result = train(config)
    trained = load_state(result.checkpoint)["model"]
    for key, value in source.named_parameters():
        assert torch.allclose(trained[key], value, atol=1e-6), key
    _, facts = export_checkpoint(result.checkpoint, tmp_path / "stage2.safetensors")
    assert facts["init_from"] == "tiny-v1"
    assert facts["init_from_sha256"] == sha256_file(init)


def test_init_from_a_resume_checkpoint_says_to_export_it(
    photos: Path, tmp_path: Path, smoke_run
) -> None:
    _, result = smoke_run
    with pytest.raises(WeightsError, match="anyrestore train export"):
        train(_config(photos, tmp_path / "run", result.checkpoint))


def test_init_from_rejects_another_config(photos: Path, tmp_path: Path) -> None:
    other = create_model("anyir_t", **{**TINY, "dim": 12})
    init = save_checkpoint(other, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="init_from"):
        train(_config(photos, tmp_path / "run", init))


def test_export_of_a_continued_run_names_its_start_and_sums_the_stages(
    photos: Path, tmp_path: Path
) -> None:
    # The starting file was itself trained in two stages: its *_total facts are what count.
    earlier = {
        "steps": 5,
        "samples_seen": 20,
        "wall_time_s": 3.0,
        "steps_total": 15,
        "samples_seen_total": 60,
        "wall_time_s_total": 9.0,
    }
    init = save_checkpoint(
        create_model("anyir_t", **TINY),
        tmp_path / "stage1.safetensors",
        extra={"training": earlier},
    )
    config = _config(photos, tmp_path / "run", init, steps=2)
    result = train(config)
    _, facts = export_checkpoint(result.checkpoint, tmp_path / "stage2.safetensors")
    assert facts["init_from"] == "stage1.safetensors"
    assert facts["init_from_sha256"] == sha256_file(init)
    assert facts["steps"] == 2 and facts["steps_total"] == 17
    assert facts["samples_seen_total"] == 60 + 2 * config.train.batch_size
    assert facts["wall_time_s_total"] >= 9.0

    # Stage 1 re-exported over the same path since, or gone: the export names what this run
    # started from, as it was recorded when the run started.
    started_from = sha256_file(init)
    save_checkpoint(create_model("anyir_t", **TINY), init, extra={"training": {"steps": 99}})
    _, facts = export_checkpoint(result.checkpoint, tmp_path / "again.safetensors")
    assert facts["init_from_sha256"] == started_from and facts["steps_total"] == 17
    init.unlink()
    _, facts = export_checkpoint(result.checkpoint, tmp_path / "again.safetensors")
    assert facts["init_from"] == "stage1.safetensors" and facts["steps_total"] == 17


def test_init_reset_keeps_fresh_weights_for_the_named_layers(photos: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    source = create_model("anyir_t", **TINY)
    init = save_checkpoint(source, tmp_path / "init.safetensors")
    config = _config(photos, tmp_path / "run", init, "train.init_reset=['output.*']")
    trained = load_state(train(config).checkpoint)["model"]
    reset = [key for key in trained if key.startswith("output.")]
    assert reset
    for key, value in source.named_parameters():
        same = torch.allclose(trained[key], value, atol=1e-6)
        assert same != (key in reset), key  # only the named layers differ from the checkpoint


def test_init_reset_pattern_must_match(photos: Path, tmp_path: Path) -> None:
    init = save_checkpoint(create_model("anyir_t", **TINY), tmp_path / "init.safetensors")
    config = _config(photos, tmp_path / "run", init, "train.init_reset=['no_such_layer.*']")
    with pytest.raises(ConfigError, match="no_such_layer"):
        train(config)


def test_init_partial_carries_what_still_fits_from_another_layout(
    photos: Path, tmp_path: Path
) -> None:
    torch.manual_seed(123)
    preview = create_model("anyir_t", **TINY, layout=1)
    init = save_checkpoint(preview, tmp_path / "preview.safetensors")
    with pytest.raises(ConfigError, match="init_partial"):
        train(_config(photos, tmp_path / "strict", init))
    config = _config(photos, tmp_path / "run", init, "train.init_partial=true")
    trained = load_state(train(config).checkpoint)["model"]
    old = preview.state_dict()
    # The attention, FFN and norms keep their meaning and shape: carried over.
    for key in ("encoder1.0.attn.qkv.weight", "encoder1.0.ffn.project_in.weight", "output.weight"):
        assert torch.allclose(trained[key], old[key], atol=1e-6), key
    # GatedDA's expansion changed shape (2C -> 8/3 C): fresh, not copied.
    assert (
        trained["encoder1.0.gate.w_exp.weight"].shape != old["encoder1.0.gate.w_exp.weight"].shape
    )
    assert "encoder1.0.attn.proj.weight" not in trained
