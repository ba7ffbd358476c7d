"""A package installed from the wheel: each model's current weights, not the older versions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from weightkit import hub_entry

from anyrestore.cli.app import app
from anyrestore.errors import WeightsError
from anyrestore.weights import (
    find_entry,
    left_out_of_wheel,
    list_entries,
    load_weights,
    verify_entries,
    wheel_weights,
)
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
    asked = runner.invoke(app, ["weights", "verify", OLDER])  # said "nothing to verify"
    assert asked.exit_code == 0 and f"{OLDER}: comes with a source checkout only" in asked.stderr


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


def test_only_the_packaged_entry_itself_is_taken_for_one_left_out(wheel_install: Path) -> None:
    # Another manifest's entry of the same name and place is a missing file, not the wheel's
    # choice: its owner is told to restore it.
    older = find_entry(OLDER)
    assert older is not None and left_out_of_wheel(older)
    assert not left_out_of_wheel(dataclasses.replace(older, sha256="0" * 64))


def test_the_default_is_in_the_wheel_when_its_model_prefers_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bytes: bytes
) -> None:
    # Without `default = true`, a Hub-only entry first for anyir_t is its preferred one,
    # while the default is the first embedded entry: the wheel must carry that one.
    packaged = manifest_module._PACKAGED_MANIFEST
    text = packaged.read_text(encoding="utf-8")
    assert "default = true\n" in text  # what is taken out below
    text = text.replace("default = true\n", "")
    head, sep, rest = text.partition("\n[[weights]]\n")  # the first entry
    path = tmp_path / "weights_manifest.toml"
    path.write_text(head + "\n" + hub_entry(tiny_bytes, name="anyir_t-hub") + sep + rest)
    monkeypatch.setattr(manifest_module, "_PACKAGED_MANIFEST", path)
    monkeypatch.delenv(manifest_module.MANIFEST_ENV, raising=False)
    assert "anyir_t-synthetic-v6" in wheel_weights()


def test_an_unknown_name_lists_what_this_installation_can_load(wheel_install: Path) -> None:
    # It offered the older versions as known weights; asked for, each only said where it is.
    with pytest.raises(WeightsError, match="unknown weights 'anyir_t-v6'") as caught:
        load_weights("anyir_t-v6")
    known = str(caught.value).split("known weights: ")[1]
    assert "anyir_t-synthetic-v6" in known and "clusir_t-synthetic-v5" in known
    assert OLDER not in known
