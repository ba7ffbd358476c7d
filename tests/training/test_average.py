"""Averaging checkpoints: the weighted mean of every tensor, facts that say what was averaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR as TINY
from trainkit import ship_as
from typer.testing import CliRunner

from anyrestore.cli.app import app
from anyrestore.errors import UsageError, WeightsError
from anyrestore.models import create_model
from anyrestore.training.average import average_checkpoints
from anyrestore.weights.checkpoint import load_checkpoint, read_metadata, save_checkpoint


def _stage(tmp_path: Path, name: str, seed: int, steps_total: int, **config) -> Path:
    torch.manual_seed(seed)
    model = create_model("anyir_t", **{**TINY, **config})
    training = {
        "steps": 100,
        "steps_total": steps_total,
        "lr": 1e-4 * seed,
        "val_psnr": 30.0 + seed,
        "ema": seed == 1,
    }
    return save_checkpoint(
        model,
        tmp_path / f"{name}.safetensors",
        name="anyir_t",
        extra={"model": "anyir_t", "trained_for": ["rain", "haze"], "training": training},
    )


def test_the_average_is_the_weighted_mean_and_says_what_it_came_from(tmp_path: Path) -> None:
    a, b = _stage(tmp_path, "a", 1, 300), _stage(tmp_path, "b", 2, 500)
    out, facts = average_checkpoints(
        [a, b], tmp_path / "avg.safetensors", shares=[3, 1], dtype="fp32"
    )

    mean = load_checkpoint(out).state_dict()
    sa, sb = load_checkpoint(a).state_dict(), load_checkpoint(b).state_dict()
    for key, value in mean.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * sa[key] + 0.25 * sb[key], msg=key)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.isfinite(load_checkpoint(out).eval()(x)).all()

    meta = read_metadata(out)
    training = json.loads(meta["training"])
    assert meta["model"] == "anyir_t" and json.loads(meta["trained_for"]) == ["haze", "rain"]
    assert training == facts
    assert training["averaged_from"] == ["a.safetensors", "b.safetensors"]
    assert training["average_shares"] == [0.75, 0.25]
    assert len(training["averaged_from_sha256"][0]) == 64
    # The heaviest input's own facts; totals the largest, not summed (stages share a history).
    assert training["lr"] == pytest.approx(1e-4) and training["steps_total"] == 500
    # Never validated, and only one input was EMA weights: neither fact is claimed for it.
    assert "val_psnr" not in training and "ema" not in training

    # Equal shares: the facts of the input furthest along, in either order.
    for order in ([a, b], [b, a]):
        _, facts = average_checkpoints(order, tmp_path / "even.safetensors", dtype="fp32")
        assert facts["lr"] == pytest.approx(2e-4) and facts["steps_total"] == 500


def test_checkpoints_from_different_steps_of_a_batchnorm_model_average(tmp_path: Path) -> None:
    """AnyIR's GatedDA has BatchNorm: two points of one run differ in its batch counters."""
    paths = []
    for name, seen in (("early", 100), ("late", 2600)):
        torch.manual_seed(0)
        model = create_model("anyir_t", **TINY)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.num_batches_tracked.fill_(seen)
                module.running_mean.fill_(seen / 1000)
        paths.append(save_checkpoint(model, tmp_path / f"{name}.safetensors", name="anyir_t"))
    out, _ = average_checkpoints(paths, tmp_path / "avg.safetensors", dtype="fp32")
    state = load_checkpoint(out).state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters, "the tiny AnyIR should have BatchNorm layers"
    for key in counters:
        assert state[key].item() == 2600
        mean = state[key.replace("num_batches_tracked", "running_mean")]
        torch.testing.assert_close(mean, torch.full_like(mean, 1.35))


def test_checkpoints_of_different_models_are_refused(tmp_path: Path) -> None:
    a = _stage(tmp_path, "a", 1, 100)
    wider = _stage(tmp_path, "wider", 2, 100, dim=16)
    with pytest.raises(WeightsError, match="another architecture or config"):
        average_checkpoints([a, wider], tmp_path / "avg.safetensors")
    assert not (tmp_path / "avg.safetensors").exists()


@pytest.mark.parametrize(
    ("count", "shares", "message"),
    [
        (1, None, "at least two"),
        (2, [1.0], "1 shares for 2 checkpoints"),
        (2, [1.0, 0.0], "positive"),
        (2, [1.0, float("nan")], "positive"),
    ],
)
def test_bad_requests_are_usage_errors(tmp_path: Path, count, shares, message) -> None:
    paths = [_stage(tmp_path, f"s{i}", i + 1, 100) for i in range(count)]
    with pytest.raises(UsageError, match=message):
        average_checkpoints(paths, tmp_path / "avg.safetensors", shares=shares)


def test_an_input_is_never_overwritten(tmp_path: Path) -> None:
    a, b = _stage(tmp_path, "a", 1, 100), _stage(tmp_path, "b", 2, 100)
    before = a.read_bytes()
    with pytest.raises(UsageError, match="one of the inputs"):
        average_checkpoints([a, b], a)
    assert a.read_bytes() == before


def test_a_shipped_model_is_averaged_by_its_weights_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "package"
    shipped.mkdir()
    a = _stage(shipped, "tiny-v1", 1, 100)
    monkeypatch.setenv("ANYRESTORE_MANIFEST", str(ship_as(a, "tiny-v1")))
    b = _stage(tmp_path, "b", 2, 100)
    out = tmp_path / "avg.safetensors"
    result = CliRunner().invoke(app, ["train", "average", "tiny-v1", str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    training = json.loads(read_metadata(out)["training"])
    assert training["averaged_from"] == ["tiny-v1.safetensors", "b.safetensors"]
    mean, sa, sb = (load_checkpoint(p).state_dict() for p in (out, a, b))
    key = "output.weight"
    torch.testing.assert_close(mean[key], (0.5 * sa[key] + 0.5 * sb[key]).half().float())

    result = CliRunner().invoke(app, ["train", "average", "tiny-v9", str(b), "-o", str(out)])
    assert result.exit_code == 4
    assert "unknown weights 'tiny-v9'" in result.stderr and "Traceback" not in result.output


def test_average_from_the_cli(tmp_path: Path) -> None:
    a, b = _stage(tmp_path, "a", 1, 100), _stage(tmp_path, "b", 2, 100)
    out = tmp_path / "avg.safetensors"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "average", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert json.loads(read_metadata(out)["training"])["average_shares"] == [0.5, 0.5]

    result = runner.invoke(
        app, ["train", "average", str(a), str(b), "-o", str(out), "--shares", "0.8,x"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "anyrestore: error: --shares takes comma-separated numbers, got '0.8,x'"
    ]


def test_an_output_that_is_not_safetensors_or_an_input_twice_is_refused(tmp_path: Path) -> None:
    # model.pt would be refused by fix as a pickle; a file twice is --shares' job.
    a, b = _stage(tmp_path, "a", 1, 300), _stage(tmp_path, "b", 2, 500)
    with pytest.raises(UsageError, match=r"\.safetensors file"):
        average_checkpoints([a, b], tmp_path / "avg.pt")
    with pytest.raises(UsageError, match="given twice"):
        average_checkpoints([a, tmp_path / "." / "a.safetensors"], tmp_path / "avg.safetensors")
    assert not (tmp_path / "avg.pt").exists() and not (tmp_path / "avg.safetensors").exists()


@pytest.mark.parametrize("said", ["noise", '"noise"'], ids=["bare-text", "json-string"])
def test_trained_for_written_as_one_name_is_one_kind(tmp_path: Path, said: str) -> None:
    """Another tool's checkpoint may say ``trained_for`` as bare text or one JSON string."""
    a = _stage(tmp_path, "a", 1, 300)
    torch.manual_seed(2)
    b = save_checkpoint(
        create_model("anyir_t", **TINY),
        tmp_path / "b.safetensors",
        name="anyir_t",
        extra={"model": "anyir_t", "trained_for": said},
    )
    out, _ = average_checkpoints([a, b], tmp_path / "avg.safetensors", dtype="fp32")
    assert json.loads(read_metadata(out)["trained_for"]) == ["haze", "noise", "rain"]
