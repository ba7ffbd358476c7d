"""A package installed from the wheel: each model's current weights, not the older versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anyrestore.cli.app import app
from anyrestore.errors import WeightsError
from anyrestore.weights import list_entries, load_weights, verify_entries, wheel_weights
from anyrestore.weights import manifest as manifest_module

runner = CliRunner()
OLDER = "anyir_t-synthetic-v5"


@pytest.fixture
def wheel_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's embedded folder as a wheel installs it: the current weights alone."""
    monkeypatch.delenv(manifest_module.MANIFEST_ENV, raising=False)
    package = tmp_path / "site-packages" / "anyrestore"
    embedded = package / "weights" / "embedded"
    embedded.mkdir(parents=True)
    for entry in list_entries():
        if entry.name in wheel_weights():
            assert entry.embedded_path is not None
            (embedded / entry.embedded_path.name).symlink_to(entry.embedded_path)
    monkeypatch.setattr(manifest_module, "_PACKAGE_DIR", package)
    return embedded


def test_an_older_version_says_it_comes_with_a_source_checkout(wheel_install: Path) -> None:
    # It said "the installation is damaged, reinstall anyrestore", which would not help.
    with pytest.raises(WeightsError, match="source checkout") as caught:
        load_weights(OLDER)
    assert "anyir_t-synthetic-v6" in str(caught.value)  # what the wheel has instead
    photo = Path(__file__).resolve().parents[2] / "anyrestore/assets/samples/sample_degraded.jpg"
    result = runner.invoke(app, ["fix", str(photo), "-o", "-", "--weights", OLDER])
    assert result.exit_code == 4 and "source checkout" in result.stderr


def test_the_current_weights_load_and_verify(wheel_install: Path) -> None:
    loaded = load_weights(None)
    assert loaded.entry is not None and loaded.entry.name == "anyir_t-synthetic-v6"
    assert loaded.path.parent == wheel_install
    checks = verify_entries()
    assert checks and all(c.ok for c in checks)
    assert {c.name for c in checks} == wheel_weights()
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 0


def test_the_list_says_where_the_older_versions_are(
    wheel_install: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, ["weights", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows[OLDER]["source_checkout_only"] and not rows[OLDER]["embedded_present"]
    assert not rows["anyir_t-synthetic-v6"]["source_checkout_only"]
    table = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "200"})
    assert "in a source checkout" in table.stdout and "missing" not in table.stdout
    from anyrestore.bench import complexity

    monkeypatch.setattr(complexity, "_counts", lambda name, sizes: (0, [0, 0]))
    (row,) = complexity.describe_models(names=["anyir_t"])
    assert row["weights"] == ["anyir_t-synthetic-v6"]  # what `anyrestore models` offers


def test_a_wheel_without_its_current_weights_is_damaged(wheel_install: Path) -> None:
    (wheel_install / "anyir_t-synthetic-v6.safetensors").unlink()
    with pytest.raises(WeightsError, match="installation is damaged, reinstall"):
        load_weights(None)
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 4
