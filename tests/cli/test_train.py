"""``anyrestore train``: one-line errors with exit 2, and train -> export -> load from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from anyrestore.cli.app import app
from anyrestore.weights.checkpoint import load_checkpoint, read_metadata

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.toml"


def _photos(folder: Path, count: int = 6) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (24 + i, 28, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    return folder


def _tiny(photos: Path, steps: int) -> list[str]:
    """The smoke recipe on ``photos`` at its smallest: 16 px crops, 2 a step, ``steps`` steps."""
    return ["--set", f"data.root={photos}", "--set", "data.crop=16", "--set",
            "train.batch_size=2", "--no-progress", "--steps", str(steps)]  # fmt: skip


def _run(*args: str):
    return CliRunner().invoke(app, ["train", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["--set", "model=anyir_xl"], "unknown model 'anyir_xl'"),
        (["--set", "train.precision=fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["--set", "data.root="], "data.root is not set"),
        # Values torch would refuse only once the model and data are built, or not at all.
        (["--set", "optim.eps=-1e-8"], "optim.eps must be > 0"),
        (["--set", "optim.weight_decay=-0.01"], "optim.weight_decay must be >= 0"),
        (["--set", "schedule.min_lr=0.1"], "schedule.min_lr must be in [0, optim.lr]"),
        (["--set", "train.steps=0", "--set", "train.epochs=inf"], "train.epochs must be a finite"),
    ],
)
def test_config_errors_are_one_line_with_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = _run("-c", str(SMOKE), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyrestore: error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_missing_config_and_data_root(tmp_path: Path) -> None:
    result = _run()
    assert result.exit_code == 2 and "--config" in result.stderr
    result = _run("-c", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2 and "config file not found" in result.stderr
    checkpoint = tmp_path / "run.pt"  # a checkpoint given as the recipe
    checkpoint.write_bytes(b"PK\x03\x04\xff\xfe binary")
    result = _run("-c", str(checkpoint))
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.strip()
        == f"anyrestore: error: {checkpoint}: not a TOML recipe (not UTF-8 text)"
    )
    unreadable = tmp_path / "locked.toml"
    unreadable.write_text('model = "anyir_t"\n')
    real_read = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self == unreadable:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # chmod would not stop root
        patch.setattr(Path, "read_text", read_text)
        result = _run("-c", str(unreadable))
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.strip() == f"anyrestore: error: cannot read {unreadable}: Permission denied"
    )
    out = tmp_path / "runs" / "first"
    result = _run("-c", str(SMOKE), "--set", f"data.root={tmp_path / 'missing'}", "--out", str(out))
    assert result.exit_code == 6 and "data.root does not exist" in result.stderr
    assert not (tmp_path / "runs").exists()  # no empty run folders left behind


def test_export_and_resume_say_which_checkpoint_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "run"
    empty.mkdir()
    cases = [
        (
            ["export", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.safetensors")],
            f"training checkpoint not found: {tmp_path / 'nope.pt'} (give its last.pt or run folder)",
        ),
        (
            ["export", str(empty), "-o", str(tmp_path / "x.safetensors")],
            f"no training checkpoint (last.pt) in {empty}",
        ),
        (["--resume", str(empty)], f"no training checkpoint (last.pt) in {empty}"),
        (  # the group's options train: export would drop them without a word
            ["--set", "optim.lr=1", "export", str(empty), "-o", str(tmp_path / "x.safetensors")],
            "--set is an option of `anyrestore train` itself, not of `train export`",
        ),
        (
            ["--no-progress", "export", str(empty), "-o", str(tmp_path / "x.safetensors")],
            "--no-progress is an option of `anyrestore train` itself, not of `train export`",
        ),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == f"anyrestore: error: {message}"
    assert not (tmp_path / "x.safetensors").exists()


def test_train_then_export_from_the_cli(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "run"
    result = _run(
        "-c", str(SMOKE), "--set", f"data.root={photos}", "--out", str(out), "--steps", "2",
        "--set", "data.crop=16", "--set", "train.batch_size=2", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "last.pt")

    weights = tmp_path / "model.safetensors"
    result = CliRunner().invoke(app, ["train", "export", str(out), "-o", str(weights)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(weights)
    assert meta["model"] == "anyir_t"
    training = json.loads(meta["training"])
    assert training["steps"] == 2 and training["samples_seen"] == 4 and training["crop"] == 16
    model = load_checkpoint(weights)  # the metadata alone rebuilds the model
    assert model.config.dim == 8
    assert all(t.dtype == torch.float16 for t in _raw_tensors(weights))

    result = CliRunner().invoke(
        app, ["train", "export", str(out), "-o", str(weights), "--dtype", "fp64"]
    )
    assert result.exit_code == 2 and "--dtype" in result.stderr


def _raw_tensors(path: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    return [t for t in load_file(str(path)).values() if t.is_floating_point()]


def test_a_run_folder_is_never_overwritten_or_resumed_elsewhere(tmp_path: Path) -> None:
    import shutil

    photos = _photos(tmp_path / "photos")
    run = tmp_path / "run"
    tiny = _tiny(photos, 4)
    assert _run("-c", str(SMOKE), "--out", str(run), "--stop-at", "2", *tiny).exit_code == 0
    before = (run / "last.pt").read_bytes()

    again = _run("-c", str(SMOKE), "--out", str(run), *tiny)  # a fresh start over it
    assert again.exit_code == 2, again.output
    assert f"{run} already holds a run (last.pt); continue it with --resume" in again.stderr
    assert (run / "last.pt").read_bytes() == before

    changed = _run("--resume", str(run), "--set", "optim.lr=1e-6", "--no-progress")
    assert changed.exit_code == 2, changed.output
    assert "optim.lr cannot change when resuming" in changed.stderr
    assert (
        "train.init_from=W.safetensors" in changed.stderr
        and (run / "last.pt").read_bytes() == before
    )

    ema = _run("--resume", str(run), "--set", "train.ema_decay=0.5", "--no-progress")
    assert ema.exit_code == 2, ema.output
    assert "train.ema_decay cannot change when resuming" in ema.stderr

    # Settings that keep the tensors' shapes would load, then silently change the network
    # (or claim another start) for the rest of the run.
    for setting, named in (
        ("model_overrides.refinement_blocks=0", "model_overrides"),
        ("train.init_partial=true", "train.init_partial"),
    ):
        rebuilt = _run("--resume", str(run), "--set", setting, "--no-progress")
        assert rebuilt.exit_code == 2, rebuilt.output
        assert f"{named} cannot change when resuming" in rebuilt.stderr
        assert (run / "last.pt").read_bytes() == before

    other = tmp_path / "other"  # another run's folder is not a place to resume this one
    assert _run("-c", str(SMOKE), "--out", str(other), "--stop-at", "1", *tiny).exit_code == 0
    theirs = (other / "last.pt").read_bytes()
    onto = _run("--resume", str(run), "--out", str(other), "--no-progress")
    assert onto.exit_code == 2, onto.output
    assert f"{other} already holds another run (last.pt)" in onto.stderr
    assert (other / "last.pt").read_bytes() == theirs

    link = tmp_path / "current.pt"  # a link to the run's checkpoint is that run, and its place
    link.symlink_to(run / "last.pt")
    assert "progress = false" in (run / "config.toml").read_text()  # started --no-progress
    through = _run("--resume", str(link), "--stop-at", "3", "--progress")
    assert through.exit_code == 0, through.output
    assert "progress = true" in (run / "config.toml").read_text()  # typed: it wins
    assert through.stdout.strip() == str(run / "last.pt") and link.is_symlink()
    assert not (tmp_path / "config.toml").exists() and not (tmp_path / "metrics.jsonl").exists()
    before = (run / "last.pt").read_bytes()
    assert before != theirs

    # A run cannot end before the step it is at (its schedule cut, itself called finished)
    shorter = _run("--resume", str(run), "--steps", "2", "--no-progress")
    assert shorter.exit_code == 2, shorter.output
    assert "the run is at step 3, past the 2 steps asked for now" in shorter.stderr
    assert (run / "last.pt").read_bytes() == before

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    resumed = _run("--resume", str(copy), "--no-progress")  # the recipe's out is elsewhere
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip() == str(copy / "last.pt")
    assert (run / "last.pt").read_bytes() == before  # the original is left as it was

    onto_itself = CliRunner().invoke(
        app, ["train", "export", str(copy), "-o", str(copy / "last.pt")]
    )
    assert onto_itself.exit_code == 2 and "must be a .safetensors file" in onto_itself.stderr
    for weights in (copy, copy / "last.pt"):  # a run is exported before it is benched
        bench = CliRunner().invoke(app, ["bench", "--suite", "speed", "--weights", str(weights)])
        assert bench.exit_code == 4, bench.output
        assert f"anyrestore train export {copy} -o" in bench.stderr


def test_a_resume_with_a_larger_batch_than_the_epoch_had_left_goes_on(tmp_path: Path) -> None:
    # 4 photos: 2 steps an epoch of 2 crops, stopped after the first; resumed with 4 crops a
    # step the epoch is 1 step long, and the place reached is already past its end.
    import subprocess
    import sys

    photos = _photos(tmp_path / "photos", count=4)
    run = tmp_path / "run"
    common = ["--set", f"data.root={photos}", "--set", "data.val_fraction=0", "--set",
              "data.crop=16", "--no-progress", "--steps", "3"]  # fmt: skip
    first = _run("-c", str(SMOKE), "--out", str(run), "--stop-at", "1", *common,
                 "--set", "train.batch_size=2")  # fmt: skip
    assert first.exit_code == 0, first.output
    args = [sys.executable, "-m", "anyrestore", "train", "--resume", str(run), *common,
            "--set", "train.batch_size=4"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)  # hung before
    assert done.returncode == 0, done.stderr
    assert torch.load(run / "last.pt", weights_only=True)["progress"]["step"] == 3


def test_val_fraction_zero_trains_on_every_photo_without_validation(tmp_path: Path) -> None:
    one = _photos(tmp_path / "one", count=1)
    tiny = ["--set", "data.crop=16", "--set", "train.batch_size=2", "--no-progress",
            "--steps", "2", "--set", "log.val_every=1"]  # fmt: skip
    refused = _run(
        "-c", str(SMOKE), "--set", f"data.root={one}", "--out", str(tmp_path / "a"), *tiny
    )
    assert refused.exit_code == 6, refused.output
    assert "1 image leaves none for the val split" in refused.stderr
    assert "data.val_fraction (0 trains on all of them" in refused.stderr
    run = tmp_path / "b"
    args = ["--set", f"data.root={one}", "--set", "data.val_fraction=0", "--out", str(run)]
    result = _run("-c", str(SMOKE), *args, *tiny)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and not any("val_psnr" in row for row in rows)


def test_a_resume_whose_validation_split_changed_says_so(tmp_path: Path) -> None:
    # Another data.root (a copy elsewhere), split_seed or val_fraction redraws the held-out
    # photos: the scores stop comparing and photos held out so far may be trained on.
    photos = _photos(tmp_path / "photos")
    run = tmp_path / "run"
    tiny = _tiny(photos, 6)
    assert _run("-c", str(SMOKE), "--out", str(run), "--stop-at", "2", *tiny).exit_code == 0
    same = _run("--resume", str(run), "--stop-at", "3", "--no-progress")
    assert same.exit_code == 0, same.output
    assert "validation split differs" not in same.output
    moved = _run("--resume", str(run), "--set", "data.split_seed=5", "--no-progress")
    assert moved.exit_code == 0, moved.output
    assert "warning: the validation split differs from the one this run started with" in (
        moved.stderr
    )


def test_a_run_recorded_before_a_setting_existed_still_resumes(tmp_path: Path) -> None:
    # A last.pt whose recipe predates train.init_partial has no value to compare: the new
    # default is not a change the user asked for.
    import torch

    from anyrestore.training.state import load_state

    photos = _photos(tmp_path / "photos")
    run = tmp_path / "run"
    tiny = _tiny(photos, 3)
    assert _run("-c", str(SMOKE), "--out", str(run), "--stop-at", "1", *tiny).exit_code == 0
    state = load_state(run / "last.pt")
    state["config_toml"] = state["config_toml"].replace("init_partial = false\n", "")
    assert "init_partial" not in state["config_toml"]
    torch.save(state, run / "last.pt")
    resumed = _run("--resume", str(run), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
