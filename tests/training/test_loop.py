"""The training loop learns, resumes exactly, survives bad files and runs under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainkit import ROOT, SMOKE, make_photos

from anyrestore.errors import ConfigError
from anyrestore.models import create_model
from anyrestore.training import load_config, train
from anyrestore.training.state import load_state


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_smoke_config_loss_goes_down(smoke_run) -> None:
    config, result = smoke_run
    assert result.finished and result.step == config.train.steps
    losses = [r["loss"] for r in _rows(result.out) if "loss" in r]
    assert len(losses) == config.train.steps // config.log.every
    first, last = losses[0], sum(losses[-2:]) / 2
    assert last < 0.8 * first, losses
    val = [r["val_psnr"] for r in _rows(result.out) if "val_psnr" in r]
    assert len(val) == 1 and 5 < val[0] < 60


def _tiny(photos: Path, out: Path, *extra: str):
    return load_config(
        SMOKE,
        [
            f"data.root={photos}",
            f"out={out}",
            "log.progress=false",
            "train.steps=8",
            "train.batch_size=2",
            "train.ema_decay=0.8",
            "log.every=1",
            "log.val_every=3",
            "data.val_items=2",
            *extra,
        ],
    )


def test_each_metrics_row_logs_the_rate_its_step_took(photos: Path, tmp_path: Path) -> None:
    # Half the run warms up (two steps: half the rate, then all of it), then a cosine to 0:
    # the last step takes half the rate; 0 is the rate of a step that never runs.
    config = _tiny(photos, tmp_path / "run", "train.steps=4", "schedule.warmup=0.5")
    train(config)
    rates = [r["lr"] for r in _rows(tmp_path / "run") if "lr" in r]
    base = config.optim.lr
    assert rates == pytest.approx([base / 2, base, base, base / 2])


def _assert_same_state(a: dict, b: dict) -> None:
    def tensors(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(v, f"{prefix}[{i}]")

    for part in ("model", "optimizer", "ema"):
        ta, tb = dict(tensors(a[part])), dict(tensors(b[part]))
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f"{part}{key} differs after resume"
    assert a["scheduler"] == b["scheduler"]
    assert a["progress"]["step"] == b["progress"]["step"]
    assert a["progress"]["samples"] == b["progress"]["samples"]


def test_resume_gives_bitwise_identical_weights(photos: Path, tmp_path: Path) -> None:
    whole = train(_tiny(photos, tmp_path / "whole"))
    assert whole.finished

    part = train(_tiny(photos, tmp_path / "split"), stop_at=3)
    assert not part.finished and part.step == 3
    assert load_state(part.checkpoint)["progress"]["step"] == 3
    # Running the same command again (a script retried) does not train past --stop-at.
    again = train(_tiny(photos, tmp_path / "split"), resume=part.checkpoint, stop_at=3)
    assert not again.finished and again.step == 3
    assert load_state(part.checkpoint)["progress"]["step"] == 3
    # Resume with a DataLoader worker this time: items are seeded per (epoch, index), so
    # which process loads them does not matter.
    resumed = train(_tiny(photos, tmp_path / "split", "data.workers=1"), resume=part.checkpoint)
    assert resumed.finished and resumed.step == 8

    _assert_same_state(load_state(whole.checkpoint), load_state(resumed.checkpoint))
    # The metrics log of the resumed run reads like the uninterrupted one.
    strip = [
        {k: v for k, v in r.items() if k not in ("samples_per_s", "eta_s")}
        for r in _rows(whole.out)
    ]
    strip2 = [
        {k: v for k, v in r.items() if k not in ("samples_per_s", "eta_s")}
        for r in _rows(resumed.out)
    ]
    assert strip == strip2


def _saved_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps at which the loop writes its resume checkpoint."""
    import anyrestore.training.loop as loop

    steps: list[int] = []
    real = loop.save_state

    def record(state: dict, path: Path) -> None:
        steps.append(state["progress"]["step"])
        real(state, path)

    monkeypatch.setattr(loop, "save_state", record)
    return steps


def test_a_run_checkpoints_by_wall_time_between_step_checkpoints(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed outright loses at most log.ckpt_minutes, whatever log.ckpt_every says."""
    base = ("train.steps=4", "log.val_every=0", "log.ckpt_every=0")
    steps = _saved_steps(monkeypatch)
    train(_tiny(photos, tmp_path / "off", *base, "log.ckpt_minutes=0"))
    assert steps == [4]  # only the final one

    steps.clear()
    # Every step takes longer than a millionth of a minute: a checkpoint after each.
    result = train(_tiny(photos, tmp_path / "often", *base, "log.ckpt_minutes=0.000001"))
    assert steps == [1, 2, 3, 4]
    assert load_state(result.checkpoint)["progress"]["step"] == 4


def test_corrupt_image_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    photos = make_photos(tmp_path / "photos", count=6)
    (photos / "photo_03.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    config = _tiny(photos, tmp_path / "run", "train.steps=4", "log.val_every=0")
    with caplog.at_level("WARNING", logger="anyrestore"):
        result = train(config)
    assert result.finished and result.checkpoint.is_file()
    assert "skipping unreadable image" in caplog.text and "photo_03.png" in caplog.text


def test_a_data_error_in_a_loader_worker_keeps_its_one_line_message(tmp_path: Path) -> None:
    # torch re-raised it as "Caught DataError in DataLoader worker process 0" plus the
    # worker's traceback, which the command line printed as one 1,000-character line.
    from anyrestore.errors import DataError

    photos = make_photos(tmp_path / "photos", count=4)
    for path in photos.iterdir():
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    config = _tiny(photos, tmp_path / "run", "data.workers=1", "data.val_fraction=0")
    with pytest.raises(DataError) as caught:
        train(config)
    message = str(caught.value)
    assert message.startswith("no readable image among") and "\n" not in message
    assert "Traceback" not in message and "worker" not in message
    # The worker (it ignores SIGTERM) is gone: left alive, the process waited for it at exit.
    import multiprocessing

    assert not multiprocessing.active_children()


def test_a_run_folder_that_cannot_be_written_is_refused_first(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was a bare NotADirectoryError (exit 1, "internal error") once model and data were built.
    import anyrestore.training.loop as loop
    from anyrestore.errors import UsageError

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(loop, "build_data", lambda *a: pytest.fail("data built first"))
    with pytest.raises(UsageError, match="cannot write the run folder .*file/run"):
        train(_tiny(photos, tmp_path / "file" / "run"))


def test_a_checkpoint_that_cannot_be_written_says_so_and_keeps_the_last(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk reached the user as torch's "[enforce fail at inline_container.cc] ...",
    # an internal error to report.
    import anyrestore.training.state as state_module
    from anyrestore.errors import DeviceError, UsageError

    out = tmp_path / "run"
    first = train(_tiny(photos, out, "train.steps=2", "log.val_every=0"))
    saved = first.checkpoint.read_bytes()

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123")

    monkeypatch.setattr(state_module.torch, "save", full)
    with pytest.raises(UsageError, match="cannot write the checkpoint .*MB free on its disk"):
        train(_tiny(photos, out, "train.steps=4", "log.val_every=0"), resume=first.checkpoint)
    assert first.checkpoint.read_bytes() == saved
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary

    def exhausted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't")

    monkeypatch.setattr(state_module.torch, "save", exhausted)  # memory, not the disk
    with pytest.raises(DeviceError, match="out of memory"):
        train(_tiny(photos, out, "train.steps=4", "log.val_every=0"), resume=first.checkpoint)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate"),
    ],
)
def test_out_of_memory_while_training_is_a_device_error_with_advice(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: RuntimeError
) -> None:
    # It was "internal error, please report it" (exit 1); the README gives 5 for it.
    from anyrestore.errors import DeviceError, ExitCode
    from anyrestore.training.losses import RestorationLoss

    def exhausted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(RestorationLoss, "__call__", exhausted)
    with pytest.raises(
        DeviceError, match="out of memory on cpu training anyir_t .2 crops"
    ) as caught:
        train(_tiny(photos, tmp_path / "run"))
    assert caught.value.exit_code == ExitCode.DEVICE and "train.accumulate" in str(caught.value)


def test_a_run_with_relative_paths_resumes_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its config.toml kept data.root as typed (corpus/train): resumed from elsewhere without
    # --config, the run found no data there (or another folder's of the same name).
    from anyrestore.training.config import tomllib

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    make_photos(start / "corpus", count=6)
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    part = train(_tiny(Path("corpus"), tmp_path / "run", "log.val_every=0"), stop_at=2)
    saved = tomllib.loads(load_state(part.checkpoint)["config_toml"])
    assert saved["data"]["root"] == str(start / "corpus")
    monkeypatch.chdir(elsewhere)
    config = load_config(None, [], base=saved)
    resumed = train(config, resume=part.checkpoint)
    assert resumed.finished and resumed.step == 8


def test_a_checkpoint_whose_optimizer_trained_other_parameters_is_refused(
    photos: Path, tmp_path: Path
) -> None:
    # Flipping distill.teacher_forcing on resume changes what trains: torch's ValueError
    # ("loaded state dict contains a parameter group ...") was an internal error, exit 1.
    from anyrestore.training.state import save_state

    part = train(_tiny(photos, tmp_path / "run", "log.val_every=0"), stop_at=2)
    state = load_state(part.checkpoint)
    group = state["optimizer"]["param_groups"][0]
    group["params"] = group["params"][:-1]  # one parameter fewer trained then
    save_state({k: v for k, v in state.items() if k not in ("format", "version")}, part.checkpoint)
    with pytest.raises(ConfigError, match="optimizer state does not fit the parameters"):
        train(_tiny(photos, tmp_path / "run", "log.val_every=0"), resume=part.checkpoint)


def test_two_process_gloo_run_writes_one_checkpoint(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "anyrestore", "train", "-c", str(SMOKE), "--no-progress",
        "--set", f"data.root={photos}", "--out", str(out), "--steps", "4",
        "--set", "train.batch_size=4", "--set", "log.every=2", "--set", "data.val_items=2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "last.pt", "metrics.jsonl"]
    state = load_state(out / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["progress"]["step"] == 4 and state["progress"]["samples"] == 16
    rows = _rows(out)
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]  # rank 0 alone logs
    assert sum("val_psnr" in r for r in rows) == 1


def test_degradations_can_run_on_the_batch(photos: Path, tmp_path: Path) -> None:
    from anyrestore.training.batches import build_data, degrade_on_device

    config = _tiny(
        photos, tmp_path / "run", "data.degrade_on_device=true", "train.steps=3", "log.val_every=0"
    )
    train_set, val_set, on_device = build_data(config, torch.device("cpu"))
    assert on_device
    item = train_set[0]
    assert torch.equal(item["lq"], item["gt"])  # clean crops come back from the workers
    assert not torch.equal(val_set[0]["lq"], val_set[0]["gt"])  # validation stays fixed
    gt = torch.stack([train_set[i]["gt"] for i in range(4)])
    kinds = [train_set[i]["kind"] for i in range(4)]
    lq = degrade_on_device(gt, kinds, config.seed, step=5, rank=0, quantize=True)
    assert lq.shape == gt.shape and not torch.equal(lq, gt)
    assert torch.equal(lq, torch.round(lq * 255) / 255)  # 8-bit like a saved image
    assert torch.equal(lq, degrade_on_device(gt, kinds, config.seed, step=5, rank=0, quantize=True))
    assert not torch.equal(
        lq, degrade_on_device(gt, kinds, config.seed, step=6, rank=0, quantize=True)
    )
    result = train(config)
    assert result.finished


def test_dark_scenes_setting_reaches_the_training_split_only(photos: Path, tmp_path: Path) -> None:
    from anyrestore.training.batches import build_data

    config = _tiny(photos, tmp_path / "run", "data.dark_scenes=0.4", "log.val_every=0")
    train_set, val_set, _ = build_data(config, torch.device("cpu"))
    assert train_set.dark_scenes == 0.4 and val_set.dark_scenes == 0.0
    bad = _tiny(photos, tmp_path / "bad", "data.dark_scenes=2", "log.val_every=0")
    with pytest.raises(ConfigError, match="dark_scenes"):
        build_data(bad, torch.device("cpu"))


def test_a_stop_signal_to_the_whole_process_group_still_checkpoints(
    photos: Path, tmp_path: Path
) -> None:
    # `timeout`, torchrun and job schedulers signal the whole process group, data loader
    # workers included: the run must still end its step, write its checkpoint and stop.
    import signal
    import time

    out = tmp_path / "stopped"
    cmd = [
        sys.executable, "-m", "anyrestore", "train", "-c", str(SMOKE), "--no-progress",
        "--set", f"data.root={photos}", "--out", str(out), "--steps", "100000",
        "--set", "data.workers=1", "--set", "log.every=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").exists() and _rows(out)):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr[-2000:]  # a SIGTERM stop, documented in the CLI
    assert "stopped at step" in stderr
    assert "internal error" not in stderr
    assert load_state(out / "last.pt")["progress"]["step"] >= 1


def test_a_compiled_run_trains_as_the_eager_run_and_saves_plain_names(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.compile runs the step under torch.compile; the weights it learns are the same.

    The compile is asked with the configured mode; the test hands the captured graphs to
    plain PyTorch instead of inductor (the same capture, nothing to build), so it is fast.
    """
    import anyrestore.training.loop as loop

    modes: list[str | None] = []
    graphs: list[torch.fx.GraphModule] = []
    real = torch.compile

    def run_as_captured(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    def fast_compile(model: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
        modes.append(mode)
        return real(model, backend=run_as_captured)

    monkeypatch.setattr(loop.torch, "compile", fast_compile)
    base = ("train.steps=3", "log.val_every=0", "train.ema_decay=0")
    eager = train(_tiny(photos, tmp_path / "eager", *base))
    compiled = train(_tiny(photos, tmp_path / "compiled", *base, "train.compile=default"))
    assert modes == ["default"]
    assert len(graphs) == 1  # the smoke model, anyir_t, is captured whole
    a, b = load_state(eager.checkpoint)["model"], load_state(compiled.checkpoint)["model"]
    assert a.keys() == b.keys()  # no "_orig_mod." prefix in the checkpoint
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


class _Payload:
    """Unpickling this would run code: a resume checkpoint must never do that."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > " + os.devnull,))


def _nan_losses(monkeypatch: pytest.MonkeyPatch, steps: set[int] | range) -> None:
    """Make the training loss NaN at the given steps (1-based; one loss call a step here)."""
    from anyrestore.training.losses import RestorationLoss

    real = RestorationLoss.__call__
    calls = [0]

    def call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        loss, parts = real(self, *args, **kwargs)
        return (loss * float("nan"), parts) if calls[0] in steps else (loss, parts)

    monkeypatch.setattr(RestorationLoss, "__call__", call)


def _finite(state: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if torch.is_tensor(t))


def test_a_step_with_a_nan_loss_is_skipped_not_learned(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One NaN loss used to make every weight NaN and overwrite the only checkpoint.
    _nan_losses(monkeypatch, {3})
    result = train(_tiny(photos, tmp_path / "run", "log.ckpt_every=1", "log.val_every=0"))
    assert result.finished and result.step == 8
    state = load_state(result.checkpoint)
    assert _finite(state["model"]) and _finite(state["ema"]["model"])
    losses = {r["step"]: r.get("loss") for r in _rows(result.out) if "lr" in r}
    assert losses[3] is None  # the skipped step is left out of the log's average
    assert all(v is not None and v == v for step, v in losses.items() if step != 3)
    assert result.val_psnr is not None and result.val_psnr == result.val_psnr


def test_a_run_whose_loss_stays_nan_stops_and_keeps_its_weights(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyrestore.errors import TrainingDiverged
    from anyrestore.training.loop import MAX_NONFINITE_STEPS

    settings = ("train.steps=20", "log.ckpt_every=1", "log.val_every=0")
    before = train(_tiny(photos, tmp_path / "before", *settings), stop_at=2)
    _nan_losses(monkeypatch, range(3, 100))
    out = tmp_path / "run"
    expected = r"in a row \(to step 12\).*holds step 11 with the weights of step 2\. Resume"
    with pytest.raises(TrainingDiverged, match=expected) as caught:
        train(_tiny(photos, out, *settings))
    assert "\n" not in str(caught.value) and MAX_NONFINITE_STEPS == 10
    state = load_state(out / "last.pt")
    assert state["progress"]["step"] == 11  # the 12th step raised before it was saved
    assert _finite(state["model"])
    # Nothing the skipped steps saw reached the weights (norms' statistics included), the
    # EMA or the optimizer.
    _assert_same_state(
        {**load_state(before.checkpoint), "scheduler": None, "progress": state["progress"]},
        {**state, "scheduler": None},
    )
    # The advice can be followed: the gradient clip may change on resume.
    monkeypatch.undo()
    resumed = train(_tiny(photos, out, *settings, "optim.grad_clip=1"), resume=out / "last.pt")
    assert resumed.finished and _finite(load_state(resumed.checkpoint)["model"])


def _fp16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the fp16 path, loss scaler included, on the CPU (which the loop refuses for speed)."""
    import anyrestore.training.loop as loop

    monkeypatch.setattr(loop, "pick_precision", lambda *args: ("fp16", False, "a test"))


def _huge_losses(monkeypatch: pytest.MonkeyPatch, steps: range) -> None:
    """Make the loss finite but so large that its fp16 gradients overflow at the given steps."""
    from anyrestore.training.losses import RestorationLoss

    real = RestorationLoss.__call__
    calls = [0]

    def call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        loss, parts = real(self, *args, **kwargs)
        return (loss * 1e30, parts) if calls[0] in steps else (loss, parts)

    monkeypatch.setattr(RestorationLoss, "__call__", call)


def test_fp16_steps_the_loss_scaler_skips_leave_no_trace(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scaler skips a step whose gradients overflow, but its forward pass had already moved
    # the BatchNorm statistics (to inf where the activations overflowed) and the EMA went on.
    _fp16_on_cpu(monkeypatch)
    settings = ("train.steps=6", "log.ckpt_every=1", "log.val_every=0")
    before = train(_tiny(photos, tmp_path / "before", *settings), stop_at=2)
    _huge_losses(monkeypatch, range(3, 100))
    result = train(_tiny(photos, tmp_path / "run", *settings))
    assert result.finished and result.step == 6  # overflows are the scaler's, not divergence
    state = load_state(result.checkpoint)
    _assert_same_state(
        {**load_state(before.checkpoint), "scheduler": None, "progress": state["progress"]},
        {**state, "scheduler": None},
    )


def test_an_fp16_run_whose_loss_stays_nan_stops(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loss scaler only lowers its scale for ever when the loss itself is NaN.
    from anyrestore.errors import TrainingDiverged

    _fp16_on_cpu(monkeypatch)
    _nan_losses(monkeypatch, range(3, 100))
    settings = ("train.steps=20", "log.val_every=0", "optim.grad_clip=1")
    with pytest.raises(TrainingDiverged, match=r"in a row \(to step 12\)"):
        train(_tiny(photos, tmp_path / "run", *settings))


def test_resuming_a_finished_run_changes_nothing(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A chain re-run after an interruption resumes its finished stages: the metrics log got
    # a second validation row and last.pt a new date, which changed a re-export.
    out = tmp_path / "run"
    done = train(_tiny(photos, out, "train.steps=4"))
    rows, saved = _rows(out), (out / "last.pt").read_bytes()
    capsys.readouterr()
    again = train(_tiny(photos, out, "train.steps=4"), resume=done.checkpoint)
    assert again.finished and again.step == 4 and again.val_psnr == done.val_psnr
    assert _rows(out) == rows and (out / "last.pt").read_bytes() == saved
    quiet = capsys.readouterr().err
    assert "the run began in" not in quiet and "the run now has" not in quiet
    # Given more steps, it trains them and ends with a validation of its own. It says that
    # the schedule was re-spread, and that "auto" chose another precision on this machine
    # (a busy one may have measured otherwise): neither passes unsaid.
    _fp16_on_cpu(monkeypatch)
    longer = train(_tiny(photos, out, "train.steps=6"), resume=done.checkpoint)
    assert longer.finished and longer.step == 6
    said = " ".join(capsys.readouterr().err.split())
    assert "the run began in fp32 and continues in fp16" in said
    assert "the run now has 6 steps (it had 4" in said
    assert [r["step"] for r in _rows(out) if "val_psnr" in r] == [3, 4, 6]
    again = train(_tiny(photos, out, "train.steps=6"), resume=longer.checkpoint)
    assert _rows(out)[-1]["step"] == 6 and len(_rows(out)) == len(rows) + 3


def test_resume_never_unpickles_objects_and_says_so_in_one_line(tmp_path: Path) -> None:
    hostile = tmp_path / "last.pt"
    torch.save({"format": "x", "payload": _Payload()}, hostile)
    with pytest.raises(ConfigError) as caught:
        load_state(hostile)
    message = str(caught.value)
    assert "holds Python objects that are not loaded" in message
    assert "\n" not in message and "weights_only" not in message  # no advice to unpickle
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(hostile.read_bytes()[:40])
    with pytest.raises(ConfigError, match="not a readable training checkpoint") as caught:
        load_state(truncated)
    assert "\n" not in str(caught.value)


def _first_step_gradients(monkeypatch: pytest.MonkeyPatch) -> list[list[torch.Tensor]]:
    """The gradients each run's optimizer sees at its first step, one list per run."""
    import anyrestore.training.loop as loop

    seen: list[list[torch.Tensor]] = []
    real = loop.build_optimizer

    def spying(model: torch.nn.Module, cfg):
        optimizer = real(model, cfg)
        run: list[torch.Tensor] = []

        def record(*_args) -> None:
            if not run:
                run.extend(p.grad.clone() for p in model.parameters() if p.grad is not None)
                seen.append(run)

        optimizer.register_step_pre_hook(record)
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", spying)
    return seen


def test_accumulated_parts_train_as_the_whole_batch(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.accumulate splits each batch into parts and steps once on their summed gradients.

    Layout 1 has no BatchNorm, so nothing is computed across the batch: the optimizer must see
    the whole batch's gradient, and the log the whole batch's loss.
    """
    grads = _first_step_gradients(monkeypatch)
    base = ("train.steps=2", "train.batch_size=4", "log.val_every=0", "model_overrides.layout=1")
    whole = train(_tiny(photos, tmp_path / "whole", *base))
    parts = train(_tiny(photos, tmp_path / "parts", *base, "train.accumulate=2"))
    single = train(_tiny(photos, tmp_path / "single", *base, "train.batch_size=2"))
    a, b = load_state(whole.checkpoint), load_state(parts.checkpoint)
    assert a["progress"]["samples"] == b["progress"]["samples"] == 8
    whole_g, parts_g, single_g = grads
    assert len(whole_g) == len(parts_g) > 0
    for x, y in zip(whole_g, parts_g, strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-7)
    # Half the batch gives another gradient: the comparison above can tell them apart.
    assert not all(
        torch.allclose(x, y, rtol=1e-4, atol=1e-7) for x, y in zip(whole_g, single_g, strict=True)
    )
    loss_a = [r["loss"] for r in _rows(whole.out) if "loss" in r]
    loss_b = [r["loss"] for r in _rows(parts.out) if "loss" in r]
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert single.finished


def test_frozen_batchnorm_trains_in_parts_as_the_whole_batch(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """train.freeze_batchnorm: layout 2's norms keep the statistics they started with, through
    steps and validation, so a batch run in parts gives the whole batch's gradient."""
    grads = _first_step_gradients(monkeypatch)
    base = ("train.steps=3", "train.batch_size=4", "log.val_every=1", "train.ema_decay=0")
    frozen = ("train.freeze_batchnorm=true",)
    whole = train(_tiny(photos, tmp_path / "whole", *base, *frozen))
    parts_config = _tiny(photos, tmp_path / "parts", *base, *frozen, "train.accumulate=2")
    parts = train(parts_config)
    live = train(_tiny(photos, tmp_path / "live", *base, "train.accumulate=2"))
    whole_g, parts_g, live_g = grads
    for x, y in zip(whole_g, parts_g, strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-7)
    # Norms on each part's own statistics give another gradient.
    assert not all(
        torch.allclose(x, y, rtol=1e-4, atol=1e-7) for x, y in zip(whole_g, live_g, strict=True)
    )

    def norm_stats(result) -> dict[str, torch.Tensor]:
        model = load_state(result.checkpoint)["model"]
        return {k: v for k, v in model.items() if k.endswith(("running_mean", "running_var"))}

    stats = norm_stats(parts)
    assert stats, "layout 2 has BatchNorm layers"
    fresh = create_model(parts_config.model, **parts_config.model_overrides)
    for name, value in stats.items():
        assert torch.equal(value, fresh.state_dict()[name]), name
    assert all(torch.equal(v, stats[k]) for k, v in norm_stats(whole).items())
    assert any(not torch.equal(v, stats[k]) for k, v in norm_stats(live).items())
    assert "BatchNorm layers keep their recorded statistics" in capsys.readouterr().err


def test_accumulate_must_divide_each_process_batch(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of train.accumulate"):
        train(_tiny(photos, tmp_path / "run", "train.batch_size=4", "train.accumulate=3"))


def test_validation_spreads_its_items_over_every_kind() -> None:
    # The papers' layouts list the split kind by kind: the first N items were all noise_15.
    from anyrestore.training.distributed import Dist
    from anyrestore.training.evaluate import evaluate

    class Split:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def __len__(self) -> int:
            return 30

        def __getitem__(self, i: int) -> dict:
            self.seen.append(i)
            return {"lq": torch.zeros(3, 8, 8), "gt": torch.zeros(3, 8, 8)}

    split = Split()
    evaluate(torch.nn.Identity(), split, 6, torch.device("cpu"), Dist(), "fp32")
    assert split.seen == [0, 5, 10, 15, 20, 25]
    everything = Split()
    evaluate(torch.nn.Identity(), everything, 0, torch.device("cpu"), Dist(), "fp32")
    assert everything.seen == list(range(30))


def test_a_stop_signal_to_another_rank_stops_this_one_too(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A preempted node's ranks get SIGTERM, the others none: every rank saves at the shared
    # step, and then must leave, not start the next epoch and wait in a collective for ever.
    from anyrestore.training import distributed

    calls = []
    real = distributed.all_sum

    def another_rank_signalled_at_step_3(dist, values, device):
        totals = real(dist, values, device)
        if len(values) != 2:  # not the step's [signalled, checkpoint due] collective
            return totals
        calls.append(1)
        return [totals[0] + (len(calls) == 3), totals[1]]

    monkeypatch.setattr(distributed, "all_sum", another_rank_signalled_at_step_3)
    config = _tiny(photos, tmp_path / "run", "train.steps=40", "log.val_every=0", "log.every=100")
    result = train(config)
    assert result.step == 3 and not result.finished
    assert load_state(result.checkpoint)["progress"]["step"] == 3


def test_a_stop_signal_at_the_end_of_an_epoch_still_checkpoints(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM after the epoch's last step has shared its flag: the run must go on to the step
    # that shares it and save there, not leave with last.pt missing (or steps behind).
    import anyrestore.training.loop as loop
    from anyrestore.training import distributed

    samplers: list = []

    class Spied(loop.ResumableSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            samplers.append(self)

    calls = []
    real = distributed.all_sum

    def signal_after_the_epochs_last_step(dist, values, device):
        totals = real(dist, values, device)
        if len(values) == 2:  # the step's [signalled, checkpoint due] collective
            calls.append(1)
            if len(calls) == samplers[0].num_samples // 2:  # batch 2
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)  # the handler runs
        return totals

    monkeypatch.setattr(loop, "ResumableSampler", Spied)
    monkeypatch.setattr(distributed, "all_sum", signal_after_the_epochs_last_step)
    settings = ("train.steps=200", "log.val_every=0", "log.every=100", "log.ckpt_every=0")
    with pytest.raises(loop.Interrupted):
        train(_tiny(photos, tmp_path / "run", *settings))
    epoch = samplers[0].num_samples // 2
    assert load_state(tmp_path / "run" / "last.pt")["progress"]["step"] == epoch + 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_at_a_metrics_row_is_a_one_line_error() -> None:
    from anyrestore.errors import UsageError
    from anyrestore.training.report import MetricsLog

    log = MetricsLog(Path("/dev/full"))  # every write: "No space left on device"
    with pytest.raises(UsageError, match="cannot write /dev/full: No space left"):
        log.write({"step": 1, "loss": 0.5})
    log.close()  # in the loop's cleanup: must not replace the error above with its own


def test_metrics_rows_stay_json_when_a_value_is_not_finite(tmp_path: Path) -> None:
    """A validation PSNR of identical images is infinite; NaN outputs give NaN."""
    from anyrestore.training.report import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 5, "val_psnr": float("inf"), "loss": float("nan"), "lr": 1e-4})
    log.close()

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert json.loads(line, parse_constant=refuse) == {
        "step": 5,
        "val_psnr": None,
        "loss": None,
        "lr": 1e-4,
    }


def test_an_fp16_run_whose_gradients_overflow_at_every_scale_stops(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A finite loss with gradients that overflow whatever the scale: the scaler would halve
    # its scale to zero and skip every step for ever, the loss rows looking normal.
    import anyrestore.training.loop as loop
    from anyrestore.errors import TrainingDiverged

    _fp16_on_cpu(monkeypatch)
    _huge_losses(monkeypatch, range(3, 1000))
    # The floor at the first halving, not after thirty (the same path, a few steps long).
    monkeypatch.setattr(loop, "MIN_LOSS_SCALE", torch.amp.GradScaler("cpu").get_scale())
    settings = ("train.steps=40", "log.val_every=0", "log.ckpt_every=0")
    with pytest.raises(TrainingDiverged, match=r"in a row \(to step 12\)"):
        train(_tiny(photos, tmp_path / "run", *settings))


def test_one_sigterm_sent_twice_still_checkpoints_but_a_second_stop_is_at_once() -> None:
    # GNU timeout sends SIGTERM to its child and then to the child's process group: the two
    # may reach the handler one by one, and must not count as "stop now, no checkpoint".
    import anyrestore.training.loop as loop

    flag: dict[str, int | None] = {"signum": None}
    with loop._stop_on_signals(flag):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between the two
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert flag["signum"] == signal.SIGTERM
        with pytest.raises(loop.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)  # another stop: at once
            time.sleep(0.01)
