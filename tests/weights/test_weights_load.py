"""load_weights on local files, the embedded default, and the manifest's rules."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from tinymodels import TINY_ANYIR as TINY
from weightkit import entry_toml, hub_entry

from anyrestore.errors import UsageError, WeightsError
from anyrestore.models import create_model
from anyrestore.weights import (
    default_entry,
    entries_for_model,
    list_entries,
    load_weights,
    resolve_weights,
    save_checkpoint,
)
from anyrestore.weights.checkpoint import read_metadata


def _embedded_entry(data: bytes, name: str = "tiny-embedded", **overrides) -> str:
    fields = {
        "name": name,
        "model": "anyir_t",
        "arch": "anyir",
        "trained_for": ["noise"],
        "license": "MIT",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "embedded": f"weights/embedded/{name}.safetensors",
    }
    fields.update(overrides)
    return entry_toml(**fields)


def _embed(manifest_path: Path, data: bytes, name: str = "tiny-embedded") -> Path:
    path = manifest_path.parent / "weights" / "embedded" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("as_str", [True, False])
def test_local_file_loads_strictly_with_config_from_metadata(tiny_file, tiny_bytes, as_str):
    model = load_weights(str(tiny_file) if as_str else tiny_file).model
    assert model.arch == "anyir" and not model.training
    assert model.config_dict()["dim"] == TINY["dim"]
    saved = load_safetensors(tiny_bytes)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert resolve_weights(tiny_file) == tiny_file


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
@pytest.mark.parametrize("exists", [True, False])
def test_pickle_checkpoints_are_refused(tmp_path, suffix, exists):
    path = tmp_path / f"model{suffix}"
    if exists:
        torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=f"only .safetensors.*never unpickles {suffix}"):
        load_weights(path)


def test_missing_and_unreadable_local_files(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError, match="is a folder, not a weights file"):
        load_weights(tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_weights(junk)
    for suffix in (".safetensors", ".pt"):  # a raw OSError before (exit 1, "internal error")
        with pytest.raises(WeightsError, match="File name too long"):
            load_weights(tmp_path / ("w" * 300 + suffix))


def test_wrong_keys_are_named(tmp_path):
    model = create_model("anyir_t", **TINY)
    full = tmp_path / "full.safetensors"
    save_checkpoint(model, full)
    state = load_safetensors(full.read_bytes())
    dropped = sorted(state)[0]
    del state[dropped]
    state["extra.weight"] = torch.zeros(2)
    broken = tmp_path / "broken.safetensors"
    save_file(state, broken, metadata=read_metadata(full))
    with pytest.raises(
        WeightsError, match=rf"missing keys \[{dropped}\].*unexpected keys \[extra.weight\]"
    ):
        load_weights(broken)


def test_same_weights_and_facts_give_the_same_bytes(tmp_path):
    """A published sha256 can be reproduced: the header order does not vary between saves."""
    torch.manual_seed(0)
    model = create_model("anyir_t", **TINY)
    facts = {"steps": 100, "data": "corpus", "hardware": "cpu", "kinds": ["noise", "rain"]}
    extra = {"model": "anyir_t", "trained_for": ["noise", "rain"], "training": facts, "é": "ü"}
    first = save_checkpoint(model, tmp_path / "a.safetensors", name="x", extra=extra).read_bytes()
    for i in range(4):
        again = save_checkpoint(model, tmp_path / f"{i}.safetensors", name="x", extra=extra)
        assert again.read_bytes() == first
    assert read_metadata(tmp_path / "a.safetensors")["é"] == "ü"
    loaded = load_weights(tmp_path / "a.safetensors").model
    want = model.state_dict()
    assert all(torch.equal(value, want[key]) for key, value in loaded.state_dict().items())


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A checkpoint that cannot be written is a one-line error; the last good one survives."""
    model = create_model("anyir_t", **TINY)
    target = save_checkpoint(model, tmp_path / "last.safetensors")
    before = target.read_bytes()

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UsageError, match="cannot write .*last.safetensors: No space left"):
        save_checkpoint(model, target, name="newer")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_file_without_anyrestore_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="no anyrestore architecture metadata"):
        load_weights(path)


def test_no_default_installed_says_how_to_pass_weights(manifest):
    manifest()
    with pytest.raises(WeightsError, match="no default weights are installed.*safetensors") as exc:
        load_weights()
    assert "--" not in str(exc.value)  # a library user has no command-line flags
    with pytest.raises(WeightsError, match="no default weights"):
        load_weights(None)


def test_packaged_manifest_parses_and_embedded_copies_match(monkeypatch):
    monkeypatch.delenv("ANYRESTORE_MANIFEST", raising=False)
    for entry in list_entries():  # a shipped copy must be the file the manifest describes
        if entry.embedded_path is not None:
            assert hashlib.sha256(entry.embedded_path.read_bytes()).hexdigest() == entry.sha256


def test_embedded_default_loads_offline_without_network(manifest, tiny_bytes, monkeypatch):
    path = manifest(
        _embedded_entry(tiny_bytes, repo_id="x/y", filename="f.safetensors", revision="a" * 40)
    )
    _embed(path, tiny_bytes)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_entry().name == "tiny-embedded"
    assert load_weights().model.arch == "anyir"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_weights(None) == path.parent / "weights/embedded/tiny-embedded.safetensors"


def test_damaged_embedded_copy_is_reported_and_kept(manifest, tiny_bytes):
    path = manifest(_embedded_entry(tiny_bytes))
    stored = _embed(path, tiny_bytes[:-1] + bytes([tiny_bytes[-1] ^ 1]))
    with pytest.raises(WeightsError, match="checksum mismatch for embedded weights.*fix its entry"):
        load_weights()
    assert stored.exists()  # package files are never deleted


def test_missing_embedded_copy_without_hub(manifest, tiny_bytes):
    path = manifest(_embedded_entry(tiny_bytes))
    with pytest.raises(WeightsError, match=f"are missing .*fix its entry in {path}"):
        load_weights("tiny-embedded")


def test_missing_embedded_copy_of_the_package_says_reinstall(manifest, tiny_bytes, monkeypatch):
    manifest(_embedded_entry(tiny_bytes))
    monkeypatch.setattr("anyrestore.weights.resolve.manifest_is_packaged", lambda: True)
    with pytest.raises(WeightsError, match="are missing .*reinstall anyrestore$"):
        load_weights("tiny-embedded")


def test_default_flag_beats_first_embedded(manifest, tiny_bytes):
    path = manifest(_embedded_entry(tiny_bytes), hub_entry(tiny_bytes, default=True))
    _embed(path, tiny_bytes)
    assert default_entry().name == "tiny-hub"
    assert [e.name for e in entries_for_model("anyir_t")] == ["tiny-hub", "tiny-embedded"]


def test_unknown_name_lists_known_names(manifest, tiny_bytes):
    manifest(hub_entry(tiny_bytes), hub_entry(tiny_bytes, name="tiny-two"))
    with pytest.raises(
        WeightsError, match="unknown weights 'nope'; known weights: tiny-hub, tiny-two, anyir_t"
    ):
        load_weights("nope")


def test_a_variant_without_weights_says_so(manifest, tiny_bytes):
    """anyir_s is a real model with no shipped checkpoint, not a misspelt name."""
    manifest(hub_entry(tiny_bytes))
    with pytest.raises(
        WeightsError, match="no trained weights ship for the model variant 'anyir_s'"
    ):
        load_weights("anyir_s")


def test_manifest_env_override_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYRESTORE_MANIFEST", os.fspath(tmp_path / "absent.toml"))
    with pytest.raises(WeightsError, match="weights manifest not found"):
        list_entries()


_SHA = "0" * 64
_BAD_MANIFESTS = {
    "not toml": ("[[weights]\nname=", "not valid TOML"),
    "missing keys": (entry_toml(name="a", model="m"), "lacks arch, trained_for, sha256, size, license"),
    "bad sha": (
        entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256="xyz", size=1, license="MIT", embedded="e"),
        "sha256 must be 64 hex digits",
    ),
    "unpinned revision": (
        entry_toml(
            name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT",
            repo_id="o/r", filename="f", revision="main",
        ),
        "pinned 40-hex commit",
    ),
    "partial hub": (
        entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT", repo_id="o/r"),
        "repo_id, filename and revision go together",
    ),
    "no source": (
        entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT"),
        "needs Hub coordinates",
    ),
    "unknown key": (
        entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT", embedded="e", sha="1"),
        "unknown keys sha",
    ),
    "duplicate": (
        2 * entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT", embedded="e"),
        "appears twice",
    ),
    "misspelt table": (  # read as an empty manifest: "no default weights are installed"
        entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT", embedded="e").replace("[[weights]]", "[[weight]]"),
        r"unknown top-level keys weight \(entries are \[\[weights\]\]\)",
    ),
    "nothing trained for": (
        entry_toml(name="a", model="m", arch="x", trained_for=[], sha256=_SHA, size=1, license="MIT", embedded="e"),
        "trained_for must be a non-empty list",
    ),
    "one embedded file, two hashes": (
        entry_toml(name="a", model="m", arch="x", trained_for=["n"], sha256=_SHA, size=1, license="MIT", embedded="e")
        + entry_toml(name="b", model="m", arch="x", trained_for=["n"], sha256="1" * 64, size=1, license="MIT", embedded="e"),
        "'a' and 'b' name the same embedded file",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_BAD_MANIFESTS))
def test_invalid_manifests_are_weights_errors(manifest, case):
    text, message = _BAD_MANIFESTS[case]
    manifest(text)
    with pytest.raises(WeightsError, match=message):
        list_entries()


def test_loading_a_shipped_model_leaves_the_compiler_unimported() -> None:
    """Checking a file's shapes on a meta-device skeleton must not pull in torch._dynamo, a
    few seconds of every ``fix`` that would otherwise be spent before the first pixel."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from anyrestore.weights import load_weights\n"
        "for name in ('anyir_t-synthetic-v6', 'clusir_t-synthetic-v5'):\n"
        "    load_weights(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))[:3])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("what", ["folder", "file"])
def test_something_here_named_like_a_model_or_entry_does_not_shadow_it(
    manifest, tiny_bytes, tmp_path, monkeypatch, what
):
    path = manifest(_embedded_entry(tiny_bytes))
    _embed(path, tiny_bytes)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    for name in ("anyir_t", "tiny-embedded"):
        (here / name).mkdir() if what == "folder" else (here / name).write_bytes(b"junk")
        assert load_weights(name).entry.name == "tiny-embedded"
    with pytest.raises(WeightsError, match="folder, not a weights file|not a readable|safetensors"):
        load_weights("./anyir_t")  # spelt as a path, it is the local one


def test_entry_whose_model_is_another_architecture_is_refused(manifest, tiny_bytes):
    path = manifest(_embedded_entry(tiny_bytes, model="clusir_t"))
    _embed(path, tiny_bytes)
    with pytest.raises(WeightsError, match="says model 'clusir_t' but arch 'anyir'"):
        load_weights("clusir_t")


@pytest.mark.parametrize("url", ["hf://org/repo/w.safetensors", "https://huggingface.co/org/repo"])
def test_a_url_is_refused_with_the_way_to_pin_it(url):
    with pytest.raises(WeightsError, match="not fetched from a URL directly.*weights add"):
        load_weights(url)


def test_shipped_names_resolve_under_a_private_manifest(manifest, tiny_bytes):
    # Recipes name the shipped weights they start from; ANYRESTORE_MANIFEST replaces the
    # listing, not the package's own files.
    path = manifest(_embedded_entry(tiny_bytes))
    _embed(path, tiny_bytes)
    shipped = resolve_weights("anyir_t-synthetic-v6", offline=True)
    assert shipped.name == "anyir_t-synthetic-v6.safetensors" and shipped.is_file()
    assert [e.name for e in list_entries()] == ["tiny-embedded"]  # the listing is the private one
    default = default_entry()
    assert default is not None and default.name == "tiny-embedded"


def test_a_local_file_named_after_a_manifest_entry_must_be_its_checkpoint(
    manifest, tiny_bytes, tmp_path
):
    # Its own name: a copy with other bytes is damaged. A generic Hub file name (what users
    # call their exports) is anyone's: a checkpoint of one's own so named loads.
    manifest(
        hub_entry(tiny_bytes, name="tiny", repo_id="org-a/tiny", filename="w/tiny.safetensors"),
        hub_entry(bytes(len(tiny_bytes)), name="published", filename="model.safetensors"),
    )
    copy = tmp_path / "tiny.safetensors"
    copy.write_bytes(tiny_bytes)
    assert resolve_weights(str(copy)) == copy
    copy.write_bytes(tiny_bytes[:-1] + bytes([tiny_bytes[-1] ^ 1]))
    with pytest.raises(WeightsError, match="named like the manifest's weights 'tiny'.*damaged"):
        resolve_weights(str(copy))
    own = tmp_path / "model.safetensors"
    own.write_bytes(tiny_bytes)
    assert resolve_weights(str(own)) == own
