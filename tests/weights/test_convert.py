"""``anyrestore weights convert``: a model's bare weights become a checkpoint `fix` loads, and
a pickle is read as tensors only, never as code."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from anyrestore.cli.app import app
from anyrestore.errors import WeightsError
from anyrestore.models import create_model
from anyrestore.weights import convert_state_dict, load_weights, read_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    torch.manual_seed(3)
    model = create_model("anyir_t").eval()
    with torch.no_grad():  # weights unlike a fresh model's, so a load that did nothing shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_a_wrapped_torch_save_converts_to_the_same_model(tmp_path: Path, trained) -> None:
    # What DDP training code typically saves: prefixed keys inside a dict with other things.
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    src = tmp_path / "net_g_latest.pth"
    torch.save({"state_dict": state, "epoch": 7, "note": "x"}, src)
    with pytest.raises(WeightsError, match="anyrestore weights convert"):
        load_weights(str(src))  # never unpickled by a load
    out = convert_state_dict(src, "anyir_t", tmp_path / "net.safetensors")
    loaded = load_weights(str(out))
    assert loaded.variant == "anyir_t" and _same_output(loaded.model, trained)
    assert read_metadata(out)["converted_from"] == "net_g_latest.pth"


def test_bare_safetensors_convert_from_the_command_line(tmp_path: Path, trained) -> None:
    src = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(src))
    with pytest.raises(WeightsError, match="no anyrestore architecture metadata.*convert"):
        load_weights(str(src))
    out = tmp_path / "ok.safetensors"
    args = ["weights", "convert", str(src), "--model", "anyir_t", "-o", str(out), "--dtype", "fp16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    rounded = copy.deepcopy(trained).half().float()  # what fp16 storage keeps of it
    assert _same_output(load_weights(str(out)).model.float(), rounded)


def test_weights_of_another_variant_are_refused_naming_the_keys(tmp_path: Path, trained) -> None:
    src = tmp_path / "w.pt"
    torch.save(trained.state_dict(), src)
    out = tmp_path / "c.safetensors"
    result = runner.invoke(app, ["weights", "convert", str(src), "-m", "clusir_t", "-o", str(out)])
    assert result.exit_code == 4
    assert "does not fit clusir" in result.stderr and "missing keys" in result.stderr
    assert not out.exists()


def test_a_training_checkpoint_is_sent_to_train_export(tmp_path: Path, trained) -> None:
    # Its raw weights would convert, but the EMA copy users want and the record of what the
    # weights were trained on would be lost without a word.
    from anyrestore.training.state import save_state

    last = save_state(
        {"model": trained.state_dict(), "ema": {"model": trained.state_dict()}, "optimizer": {}},
        tmp_path / "last.pt",
    )
    with pytest.raises(WeightsError, match=r"resume checkpoint .*anyrestore train export"):
        convert_state_dict(last, "anyir_t", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("owned",))

    src = tmp_path / "evil.pt"
    src.write_bytes(pickle.dumps({"state_dict": Payload()}))
    out = tmp_path / "x.safetensors"
    result = runner.invoke(app, ["weights", "convert", str(src), "-m", "anyir_t", "-o", str(out)])
    assert result.exit_code == 4 and "never loaded" in result.stderr
    assert "weights_only" not in result.stderr  # torch's advice to unpickle it is not passed on
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("version", ["2.4.1", "2.5.1+cu121", "2.9.1"])
def test_a_torch_whose_safe_loader_is_not_safe_reads_no_torch_file(
    tmp_path: Path, trained, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    # The package allows torch 2.4 to 2.9, where a crafted file could still get through
    # weights_only (CVE-2025-32434 before 2.6, CVE-2026-24747 before 2.10).
    src = tmp_path / "w.pt"
    torch.save(trained.state_dict(), src)
    monkeypatch.setattr(torch, "__version__", version)
    out = tmp_path / "x.safetensors"
    result = runner.invoke(app, ["weights", "convert", str(src), "-m", "anyir_t", "-o", str(out)])
    assert result.exit_code == 4, result.output
    assert f"torch {version} cannot read a torch file safely" in result.stderr
    assert not out.exists()


def test_the_source_is_never_overwritten(tmp_path: Path, trained) -> None:
    src = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(src))
    before = src.read_bytes()
    result = runner.invoke(app, ["weights", "convert", str(src), "-m", "anyir_t", "-o", str(src)])
    assert result.exit_code == 2 and "over its source" in result.stderr
    assert src.read_bytes() == before


def test_a_mistyped_model_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    src = tmp_path / "big.pt"
    src.write_bytes(b"not read at all")  # reading it would be a weights error (exit 4)
    args = [
        "weights",
        "convert",
        str(src),
        "--model",
        "anyir_tt",
        "-o",
        str(tmp_path / "o.safetensors"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "anyir_tt" in result.stderr and "torch file" not in result.stderr
