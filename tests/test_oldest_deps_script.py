"""scripts/test_oldest_deps.sh: the pins it installs are pyproject.toml's lower bounds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test_oldest_deps.sh"


def _pins(pyproject: Path) -> subprocess.CompletedProcess[str]:
    """Run the script's pinning step (its embedded Python) on ``pyproject``'s folder."""
    text = SCRIPT.read_text()
    code = text.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    return subprocess.run(
        [sys.executable, "-c", code], cwd=pyproject.parent, capture_output=True, text=True
    )


def test_every_bound_is_pinned_except_torch() -> None:
    done = _pins(ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stderr
    pins = dict(line.split("==") for line in done.stdout.split())
    assert "torch" not in pins  # only torch 2.13.0 installs as a CPU build
    assert {"typer", "rich", "pillow", "huggingface-hub", "numpy", "pytest", "bm3d"} <= set(pins)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name, version in pins.items():
        assert re.search(rf'"{re.escape(name)}\s*>=\s*{re.escape(version)}[",]', pyproject)


def test_a_dependency_without_a_lower_bound_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["numpy>=1.24", "rich"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=7"]\nbench = ["scipy>=1.10"]\n'
    )
    done = _pins(tmp_path / "pyproject.toml")
    assert done.returncode != 0 and "no >= bound to pin in 'rich'" in done.stderr


def test_a_python_the_oldest_wheels_do_not_exist_for_is_refused_first(tmp_path: Path) -> None:
    # numpy 1.24.4 has no wheels for Python 3.12+: pip would try to build it and fail late.
    newer = tmp_path / "python3.13"
    newer.write_text("#!/bin/sh\nexit 1\n")  # what the version check answers there
    newer.chmod(0o755)
    venv = tmp_path / "venv"
    venv.mkdir()
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(newer), "VENV": str(venv)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "run with PYTHON=python3.11" in done.stderr
    assert venv.is_dir()  # refused before anything was removed or installed
