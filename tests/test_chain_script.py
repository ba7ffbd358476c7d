"""scripts/train_chain.sh: a release trained in stages, reproduced with one command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyrestore.training.state import load_state

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_chain.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _chain(tmp_path: Path) -> tuple[Path, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"photo{i}.png")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name, steps in (("first", 6), ("second", 4)):
        (recipes / f"{name}.toml").write_text(
            f'extends = "{ROOT / "configs" / "smoke.toml"}"\n[train]\nsteps = {steps}\n'
        )
    chain = recipes / "demo.chain"
    chain.write_text(
        "# recipe  stop at\nfirst.toml  4\n\n"
        'second.toml 0 train.steps=3 data.kinds=["rain","haze"]  # to its end, overridden\n'
    )
    return chain, photos


def _run(chain: Path, photos: Path, runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    args = ["bash", str(SCRIPT), str(chain), str(photos), str(runs)]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_each_stage_starts_from_the_last_and_a_rerun_only_finishes_what_is_missing(
    tmp_path: Path,
) -> None:
    chain, photos = _chain(tmp_path)
    runs = tmp_path / "runs"
    done = _run(chain, photos, runs)
    assert done.returncode == 0, done.stderr[-2000:]
    result = runs / "second.safetensors"
    assert done.stdout.strip().splitlines()[-1] == str(result) and result.is_file()
    assert load_state(runs / "first" / "last.pt")["progress"]["step"] == 4  # stopped there
    # A stage's own overrides outrank its recipe (3 steps, not 4; two kinds).
    assert load_state(runs / "second" / "last.pt")["progress"]["step"] == 3
    assert 'kinds = ["rain", "haze"]' in (runs / "second" / "config.toml").read_text()
    # The second stage started from the first stage's export, every tensor carried over.
    assert done.stderr.count("tensors carried over") == 1
    assert done.stderr.count("== stage") == 2

    again = _run(chain, photos, runs)  # nothing left to do
    assert again.returncode == 0 and "== stage" not in again.stderr
    assert again.stdout.strip() == str(result)

    result.unlink()  # as if interrupted after training, before its export
    resumed = _run(chain, photos, runs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "== stage 2" in resumed.stderr and "== stage 1" not in resumed.stderr
    assert "resuming at step 3" in resumed.stderr.replace("\n", " ")
    assert result.is_file()


def test_a_stage_override_that_is_not_key_value_is_refused(tmp_path: Path) -> None:
    chain, photos = _chain(tmp_path)
    chain.write_text("first.toml 0 train.steps\n")
    bad = _run(chain, photos, tmp_path / "runs2")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("train_chain.sh: stage 1: not a KEY=VALUE override: train.steps")


def test_a_missing_recipe_is_one_line_and_exit_2(tmp_path: Path) -> None:
    chain, photos = _chain(tmp_path)
    chain.write_text("first.toml 0\nmissing.toml 0\n")
    bad = _run(chain, photos, tmp_path / "runs")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == f"train_chain.sh: stage 2: no such recipe: {chain.parent}/missing.toml"
    )
    assert not (tmp_path / "runs" / "first").exists()  # checked before any training


def test_two_stages_may_not_share_a_run_folder(tmp_path: Path) -> None:
    chain, photos = _chain(tmp_path)
    (chain.parent / "other").mkdir()
    shutil.copy(chain.parent / "first.toml", chain.parent / "other" / "first.toml")
    chain.write_text("first.toml 0\nother/first.toml 0\n")
    bad = _run(chain, photos, tmp_path / "runs")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "train_chain.sh: stage 2: a recipe named first.toml is already a stage: rename one"
    )
    assert not (tmp_path / "runs" / "first").exists()  # checked before any training


@pytest.mark.parametrize("chain", sorted((ROOT / "configs").glob("*.chain")), ids=lambda p: p.name)
def test_shipped_chains_name_recipes_that_load_and_stop_inside_their_runs(chain: Path) -> None:
    from anyrestore.training.config import load_config

    stages = [line.split("#")[0].split() for line in chain.read_text().splitlines()]
    stages = [s for s in stages if s]
    assert stages
    for recipe, stop, *overrides in stages:
        config = load_config(chain.parent / recipe, overrides)
        assert 0 <= int(stop) <= config.train.steps, recipe
