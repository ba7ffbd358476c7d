"""scripts/device_train.sh run: train from a corpus archive, stop at a time limit, return weights.

On a GPU machine the script gets a few minutes; here it trains the tiny smoke recipe on the CPU
from an archive laid out as scripts/build_corpus.py writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyrestore.weights.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_train.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus-src")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        (folder / "corpus" / split).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
            # named as scripts/build_corpus.py names a photo at its scales (100 and 50 %)
            Image.fromarray(pixels).save(folder / "corpus" / split / f"photo{i}__s100.png")
            half = Image.fromarray(pixels[::2, ::2])
            half.save(folder / "corpus" / split / f"photo{i}__s050.png")
    path = folder / "corpus.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(folder / "corpus", arcname="corpus")
    return path


@pytest.fixture(scope="module", autouse=True)
def _probes_measured_once() -> None:
    """Take the 1x1 probes (anyrestore.compute: with and without gradients, as a training
    run takes both) into the session's cache first, so the short time limits below count
    start-up and training, not seconds of measuring."""
    code = """
import torch
from anyrestore.compute import choose_path, training_pointwise
choose_path("cpu", "fp32", model=torch.nn.Conv2d(3, 3, 1))
training_pointwise(torch.device("cpu"), "fp32")
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def run_script(
    tmp_path: Path,
    archive: Path,
    minutes: str,
    *extra: str,
    bench: bool = True,
    recipe: str = "configs/smoke.toml",
    **more: str,
):
    env = {
        **os.environ,
        **more,
        "CORPUS": str(archive),
        "WHEELS": str(tmp_path / "no-wheels"),
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "BENCH": "1" if bench else "0",
        "BENCH_SIDE": "32",
    }
    args = ["bash", str(SCRIPT), "run", recipe, minutes, "--device", "cpu", *extra]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_finished_run_returns_weights_metrics_and_the_held_out_bench(tmp_path, archive) -> None:
    done = run_script(tmp_path, archive, "5", "--steps", "6")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    model = load_checkpoint(out / "weights.safetensors")
    assert model.config.dim == 8  # the smoke recipe's tiny model
    assert (out / "weights.safetensors").stat().st_size < 16 * 2**20  # what the device returns
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").open()]
    assert max(s for s in steps if s is not None) == 6
    bench = json.loads((out / "bench-new.json").read_text())
    # Scored on the archive's val photos, one scale of each, next to the degraded input
    sources = {row["source"] for row in bench}
    assert sources == {"baseline", str(out / "weights.safetensors")}
    assert {row["images"] for row in bench if row["kind"] != "average" and "image" not in row} == {
        2
    }
    # The smoke recipe starts from nothing, so there is no shipped model to compare with.
    assert not (out / "bench-shipped.json").exists()


def test_a_recipe_starting_from_named_weights_is_benched_beside_them(tmp_path, archive) -> None:
    # Release recipes name the shipped weights they start from (train.init_from).
    import torch

    from anyrestore.models import create_model
    from anyrestore.weights import save_checkpoint
    from anyrestore.weights.authoring import manifest_entry_for

    torch.manual_seed(0)
    start = create_model("anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1)
    shipped = save_checkpoint(start, tmp_path / "w" / "tiny-v1.safetensors")
    entry = manifest_entry_for(
        shipped, name="tiny-v1", license="MIT", model="anyir_t", trained_for=["rain"],
        embedded=shipped.name,
    )  # fmt: skip
    manifest = shipped.parent / "weights_manifest.toml"
    manifest.write_text("schema_version = 1\n\n" + entry, encoding="utf-8")
    recipe = tmp_path / "from_named.toml"
    recipe.write_text(
        f'extends = "{ROOT / "configs" / "smoke.toml"}"\n[train]\ninit_from = "tiny-v1"\n'
    )
    # As on a warm machine after a call the time limit cut short: the last call's run folder
    # and corpus are replaced, not refused ("already holds a run") or mixed in.
    stale = tmp_path / "work" / "corpus" / "train" / "moved_to_val.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an older archive")
    old_run = tmp_path / "work" / "run-from_named" / "last.pt"
    old_run.parent.mkdir(parents=True)
    old_run.write_bytes(b"a resume checkpoint of the last call")
    done = run_script(
        tmp_path,
        archive,
        "5",
        "--steps",
        "2",
        recipe=str(recipe),
        ANYRESTORE_MANIFEST=str(manifest),
    )
    assert done.returncode == 0, done.stderr
    assert not stale.exists()
    bench = json.loads((tmp_path / "out" / "bench-shipped.json").read_text())
    assert {row["source"] for row in bench} == {"baseline", str(shipped)}
    assert {row["images"] for row in bench if row["kind"] != "average" and "image" not in row} == {
        2
    }
    # Scored photo by photo, so the release rule can pair them (compare_bench refuses otherwise).
    compared = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare_bench.py"),
         str(tmp_path / "out" / "bench-shipped.json"), str(tmp_path / "out" / "bench-new.json"),
         "--per-image"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compared.returncode in (0, 1), compared.stderr  # 2: not comparable
    assert "release rule" in compared.stdout


def test_the_time_limit_stops_training_and_still_returns_weights(tmp_path, archive) -> None:
    done = run_script(tmp_path, archive, "0.2", "--steps", "100000", bench=False)  # 12 s
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "out" / "train.log").read_text()
    assert "stopped at step" in log
    load_checkpoint(tmp_path / "out" / "weights.safetensors")


def test_a_limit_too_short_to_log_a_step_says_so(tmp_path, archive) -> None:
    done = run_script(tmp_path, archive, "0.01", bench=False)  # 0.6 s: not even torch loads
    assert done.returncode == 1
    assert "time limit came before the first logged step" in done.stderr
    assert not (tmp_path / "out" / "weights.safetensors").exists()


def test_a_failing_recipe_fails_the_script(tmp_path, archive) -> None:
    done = run_script(tmp_path, archive, "5", "--set", "optim.lr=-1", bench=False)
    assert done.returncode != 0
    assert "training failed" in done.stderr
    assert not (tmp_path / "out" / "weights.safetensors").exists()


def test_fitted_steps_end_the_cosine_in_time_after_falling_back_to_settings_that_train(
    tmp_path, archive
) -> None:
    # fp16 training needs a GPU: the first two tries fail, the fp32 fallback trains.
    done = run_script(
        tmp_path,
        archive,
        "0.55",
        "--set",
        "train.steps=1000000",
        "--set",
        "train.precision=fp16",
        bench=False,
        STEPS="fit",
        CAL_SECONDS="12",  # start-up takes seconds; the smoke model's steps take milliseconds
        RESERVE="8",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("calibration with") == 2
    out = tmp_path / "out"
    fitted = (out / "calibrate.log").read_text()
    assert "(with data.degrade_on_device=false train.precision=fp32)" in fitted
    steps = int(fitted.rsplit("train.steps <= ", 1)[1].split()[0])
    assert 1 <= steps < 1000000
    # The run's schedule is the fitted one (whether it ends before the limit depends on how
    # busy the machine is, so that is not asserted), and its weights come back either way.
    log = " ".join((out / "train.log").read_text().split())
    assert f"steps/epoch, {steps} steps" in log
    load_checkpoint(out / "weights.safetensors")


def test_slim_leaves_only_the_recipes_starting_weights_to_travel_and_unslim_restores(
    tmp_path,
) -> None:
    """A device call carries at most 64 MiB: `slim` drops the embedded checkpoints that no
    recipe of the call starts from or distils from, `unslim` gives the working tree back."""
    repo = tmp_path / "repo"
    embedded = repo / "anyrestore" / "weights" / "embedded"
    embedded.mkdir(parents=True)
    for name in ("old", "start", "teacher", "named", "other"):
        (embedded / f"{name}.safetensors").write_bytes(name.encode() * 1000)
    # A recipe may name shipped weights instead of their file: the manifest says which.
    named = (embedded / "named.safetensors").read_bytes()
    manifest = repo / "anyrestore" / "weights_manifest.toml"
    manifest.write_text(
        "schema_version = 1\n\n[[weights]]\n"
        'name = "tiny-v1"\nmodel = "anyir_t"\narch = "anyir"\ntrained_for = ["rain"]\n'
        f'license = "MIT"\nsha256 = "{hashlib.sha256(named).hexdigest()}"\n'
        f'size = {len(named)}\nembedded = "weights/embedded/named.safetensors"\n'
    )
    (repo / "named.toml").write_text('model = "anyir_t"\n[train]\ninit_from = "tiny-v1"\n')
    (repo / "recipe.toml").write_text(
        'model = "anyir_t"\n[train]\ninit_from = "anyrestore/weights/embedded/start.safetensors"\n'
    )
    # Written another way, and a teacher: both must travel too.
    (repo / "distil.toml").write_text(
        'model = "anyir_t"\n[distill]\n'
        'teacher = "./anyrestore/weights/../weights/embedded/teacher.safetensors"\n'
    )

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "ANYRESTORE_MANIFEST": str(manifest),
    }

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], cwd=repo, env=env, capture_output=True, text=True
        )

    done = script("slim", "recipe.toml", "distil.toml", "named.toml")
    assert done.returncode == 0, done.stderr
    assert git("ls-files", "anyrestore/weights").split() == [
        "anyrestore/weights/embedded/named.safetensors",
        "anyrestore/weights/embedded/start.safetensors",
        "anyrestore/weights/embedded/teacher.safetensors",
    ]
    # Still on disk, and ignored rather than untracked, so they do not travel either.
    assert (embedded / "old.safetensors").is_file()
    assert "??" not in git("status", "--short", "--untracked-files=all")
    # A commit now would delete the slimmed weights from the repository: refused.
    commit = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "oops"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert commit.returncode != 0 and "unslim" in commit.stderr
    # Slimmed for another call: it starts from every file, not what the last call kept.
    assert script("slim", "named.toml").returncode == 0
    assert git("ls-files", "anyrestore/weights").split() == [
        "anyrestore/weights/embedded/named.safetensors"
    ]
    (repo / "recipe.toml").write_text('model = "anyir_t"\n')
    git("add", "recipe.toml")
    refused = script("slim", "recipe.toml")  # would go out with the next commit: refused
    assert refused.returncode == 2 and "staged changes" in refused.stderr
    git("reset", "-q", "HEAD", "--", "recipe.toml")
    git("checkout", "--", "recipe.toml")

    done = script("unslim")
    assert done.returncode == 0, done.stderr
    assert len(git("ls-files", "anyrestore/weights").split()) == 5
    assert git("status", "--short", "--untracked-files=all") == ""
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert script("slim").returncode == 2  # the recipes are required
