"""What a wheel of anyrestore carries: each model's current weights, not every old version."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from anyrestore.weights import default_entry, list_entries, wheel_weights
from anyrestore.weights.manifest import MANIFEST_ENV

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: PyPI refuses a file over 100 MB unless the project is granted more.
PYPI_FILE_LIMIT = 100 * 1000 * 1000


def _package_data() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["tool"]["setuptools"]["package-data"]["anyrestore"]


def _setuptools_builds() -> bool:
    """Whether a wheel can be built here without fetching a build backend."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return int(version.split(".")[0]) >= 77  # pyproject.toml's build requirement


@pytest.fixture(autouse=True)
def _packaged_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MANIFEST_ENV, raising=False)


def test_the_wheel_lists_each_models_current_weights() -> None:
    # The wheel once carried all ten embedded versions (113 MB, over PyPI's limit).
    listed = {p for p in _package_data() if p.startswith("weights/embedded/")}
    entries = {e.name: e for e in list_entries()}
    preferred = {entries[name].embedded for name in wheel_weights()}
    assert listed == preferred, f"pyproject.toml's package-data should name {sorted(preferred)}"
    default = default_entry()
    assert default is not None and default.embedded in listed
    assert {entries[name].model for name in wheel_weights()} == {"anyir_t", "clusir_t"}
    for path in listed:
        assert (ROOT / "anyrestore" / path).is_file(), path


@pytest.mark.skipif(not _setuptools_builds(), reason="no setuptools >= 77 to build a wheel with")
def test_a_built_wheel_holds_the_current_weights_under_pypis_limit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "anyrestore",
        src / "anyrestore",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    # What `anyrestore fix anyrestore/assets/samples/chelsea.jpg` leaves in a checkout.
    shutil.copy2(
        src / "anyrestore/assets/samples/chelsea.jpg",
        src / "anyrestore/assets/samples/chelsea_restored.jpg",
    )
    # What an install before the wheel was slimmed leaves in a checkout: setuptools takes
    # every package file its SOURCES.txt names unless told to take package-data alone.
    stale = src / "anyrestore.egg-info"
    stale.mkdir()
    embedded = sorted((ROOT / "anyrestore/weights/embedded").glob("*.safetensors"))
    lines = [f"anyrestore/weights/embedded/{p.name}" for p in embedded]
    (stale / "SOURCES.txt").write_text("\n".join(["pyproject.toml", *lines]) + "\n")
    out = tmp_path / "wheel"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("anyrestore-*.whl")
    assert wheel.stat().st_size < PYPI_FILE_LIMIT
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = {n for n in names if n.endswith(".safetensors")}
    entries = {e.name: e for e in list_entries()}
    assert shipped == {f"anyrestore/{entries[name].embedded}" for name in wheel_weights()}
    assert "anyrestore/weights/weights_manifest.toml" in names
    assert "anyrestore/assets/samples/sample_degraded.jpg" in names  # the README's first command
    assert "anyrestore/assets/samples/chelsea_restored.jpg" not in names
