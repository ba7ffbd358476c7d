"""``anyrestore weights list | download | verify | add`` and the manifest authoring helper."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR as TINY
from typer.testing import CliRunner
from weightkit import COMMIT, REPO, hub_entry

from anyrestore.cli.app import app
from anyrestore.cli.weights import kinds_summary
from anyrestore.errors import UsageError, WeightsError
from anyrestore.models import create_model
from anyrestore.weights import (
    add_entry,
    find_entry,
    list_entries,
    load_weights,
    manifest_entry_for,
    save_checkpoint,
)
from anyrestore.weights.manifest import parse_manifest, tomllib
from anyrestore.weights.resolve import entry_for

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["weights", *args])


def test_list_shows_entries_and_cache_state(fake_hub, manifest, tiny_bytes):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes, description="tiny test net"))

    rows = json.loads(_run("list", "--json").stdout)
    assert [(r["name"], r["model"], r["cached"], r["embedded_present"]) for r in rows] == [
        ("tiny-hub", "anyir_t", False, False)
    ]
    assert rows[0]["trained_for"] == ["noise", "rain"] and rows[0]["license"] == "MIT"

    result = _run("download", "tiny-hub")
    assert result.exit_code == 0, result.output
    path = result.stdout.strip()
    assert open(path, "rb").read() == tiny_bytes

    rows = json.loads(_run("list", "--json").stdout)
    assert rows[0]["cached"] and rows[0]["cached_path"] == path
    table = _run("list").stdout
    assert "tiny-hub" in table and "noise, rain" in table and "cached" in table


def test_verify_reports_and_removes_a_corrupted_cached_file(fake_hub, manifest, tiny_bytes):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes))
    assert _run("verify").exit_code == 0  # nothing cached: nothing to check

    path = _run("download", "tiny-hub").stdout.strip()
    result = _run("verify")
    assert result.exit_code == 0 and "ok" in result.stdout

    blob = Path(path).resolve()
    blob.write_bytes(tiny_bytes[:-1] + b"\0")  # bit rot in the cache
    result = _run("verify")
    assert result.exit_code == 4
    assert "MISMATCH" in result.stdout
    assert "1 of 1 files failed verification (tiny-hub)" in result.stderr
    assert not blob.exists()
    assert _run("download", "tiny-hub").exit_code == 0  # and a retry re-downloads


def test_errors_are_one_line_with_exit_4(manifest, fake_hub, tiny_bytes, monkeypatch):
    manifest(hub_entry(tiny_bytes))
    result = _run("download", "nope")
    assert result.exit_code == 4
    assert result.stderr.startswith(
        "anyrestore: error: unknown weights 'nope'; known weights: tiny-hub"
    )
    assert result.stderr.count("\n") == 1
    assert "pass a path" not in _run("verify", "nope").stderr  # neither command takes one
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _run("download", "tiny-hub")
    assert result.exit_code == 4 and "offline" in result.stderr and "Traceback" not in result.output


def test_entry_from_file_round_trips_and_resolves(fake_hub, manifest, tiny_file, tiny_bytes):
    text = manifest_entry_for(
        tiny_file,
        name="tiny-made",
        license="Apache-2.0",
        repo_id=REPO,
        revision=COMMIT,
        description='a "quoted" line',
    )
    entry = tomllib.loads(text)["weights"][0]
    assert entry["sha256"] == hashlib.sha256(tiny_bytes).hexdigest() and entry["size"] == len(
        tiny_bytes
    )
    assert (
        entry["model"] == "anyir_t"
        and entry["arch"] == "anyir"
        and entry["filename"] == "tiny.safetensors"
    )
    assert entry["trained_for"] == ["noise", "rain"]  # from the checkpoint's metadata
    assert entry["training"] == {"steps": 10, "dataset": "synthetic"}

    path = manifest()
    add_entry(text, path)
    add_entry(
        manifest_entry_for(
            tiny_file, name="tiny-made2", license="MIT", repo_id=REPO, revision=COMMIT
        ),
        path,
    )
    assert [e.name for e in list_entries()] == ["tiny-made", "tiny-made2"]
    assert find_entry("tiny-made").description == 'a "quoted" line'
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    assert load_weights("tiny-made").model.arch == "anyir"


def test_entry_refuses_what_the_manifest_would_reject(tiny_file):
    """The options made the entry: a bad one is a usage error (exit 2), not damaged weights."""
    with pytest.raises(UsageError, match="needs Hub coordinates"):
        manifest_entry_for(tiny_file, name="x", license="MIT")
    with pytest.raises(UsageError, match="pinned 40-hex commit"):
        manifest_entry_for(tiny_file, name="x", license="MIT", repo_id=REPO, revision="main")


def test_add_refuses_a_checkpoint_that_would_not_load(manifest, tiny_file, tmp_path):
    """An entry is a promise that the file loads: a damaged config is refused up front."""
    from safetensors.torch import load_file, save_file

    from anyrestore.weights import read_metadata

    manifest()
    meta = read_metadata(tiny_file)
    broken = tmp_path / "broken.safetensors"
    save_file(load_file(tiny_file), broken, metadata={**meta, "config": "{not json"})
    hub = ["--repo-id", REPO, "--revision", COMMIT]
    result = _run("add", str(broken), "--name", "b", "--license", "MIT", *hub, "--write")
    assert result.exit_code == 4
    assert "config metadata is not valid JSON" in result.stderr
    assert list_entries() == []


def _add_args(checkpoint: Path, trained_for: str) -> list[str]:
    """`weights add` of ``checkpoint`` as the entry tiny-emb (MIT)."""
    return [
        "add",
        str(checkpoint),
        "--name",
        "tiny-emb",
        "--license",
        "MIT",
        "--trained-for",
        trained_for,
    ]


def test_add_command_embeds_and_writes(manifest, tiny_file, tiny_bytes):
    path = manifest()
    package = path.parent  # a private manifest's embedded paths start from its own folder
    args = _add_args(tiny_file, "noise, haze")
    result = _run(*args, "--embed", "--default")
    assert result.exit_code == 0, result.output
    assert (
        tomllib.loads(result.stdout)["weights"][0]["embedded"]
        == "weights/embedded/tiny-emb.safetensors"
    )
    assert (package / "weights/embedded/tiny-emb.safetensors").read_bytes() == tiny_bytes
    assert list_entries() == []  # printing does not touch the manifest

    assert _run(*args, "--embed", "--default", "--write").exit_code == 0
    (entry,) = list_entries()
    assert entry.trained_for == ("noise", "haze") and entry.default
    assert load_weights().model.arch == "anyir"
    # A manifest that cannot be written leaves no copy that no entry names.
    import anyrestore.weights as weights_api

    real_add = weights_api.add_entry

    def unwritable(text: str, *args, check_only: bool = False, **kwargs):
        if check_only:
            return real_add(text, *args, check_only=True, **kwargs)
        raise UsageError("cannot write the manifest: Read-only file system")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_api, "add_entry", unwritable)
        other = _add_args(tiny_file, "rain")
        other[other.index("tiny-emb")] = "tiny-two"
        failed = _run(*other, "--embed", "--write")
    assert failed.exit_code == 2 and "Read-only" in failed.stderr
    assert not (package / "weights/embedded/tiny-two.safetensors").exists()
    # A list that names nothing is the user's mistake (exit 2), not the file's (exit 4).
    empty = _run(*_add_args(tiny_file, ","), "--embed")
    assert empty.exit_code == 2 and "--trained-for ',' names no kind" in empty.stderr


def test_info_describes_one_entry(fake_hub, manifest, tiny_bytes):
    manifest(
        hub_entry(tiny_bytes, description="tiny test net")
        + '[weights.training]\nsteps = 12\nhardware = "1 x x86_64"\n'
    )
    shown = _run("info", "tiny-hub")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("tiny-hub")
    for text in ("tiny test net", "license MIT", f"Hub {REPO}/", "steps = 12", '"1 x x86_64"'):
        assert text in shown.stdout
    as_json = json.loads(_run("info", "tiny-hub", "--json").stdout)
    assert as_json["training"] == {"steps": 12, "hardware": "1 x x86_64"}
    assert as_json["cached"] is False
    missing = _run("info", "nope")
    assert missing.exit_code == 4 and "unknown weights 'nope'" in missing.stderr
    assert ".safetensors" not in missing.stderr  # info takes names, not files
    variant = _run("info", "clusir_s")  # a variant no weights ship for
    assert variant.exit_code == 4 and "no trained weights ship" in variant.stderr
    assert ".safetensors" not in variant.stderr


def test_a_printed_entry_must_not_clash_with_the_manifest(manifest, tiny_file, tiny_bytes):
    manifest(hub_entry(tiny_bytes))  # named tiny-hub
    args = ["add", str(tiny_file), "--license", "MIT", "--repo-id", REPO, "--revision", COMMIT]
    taken = _run(*args, "--name", "tiny-hub")
    assert taken.exit_code == 2 and "'tiny-hub' appears twice" in taken.stderr
    assert taken.stdout == ""  # no block to paste that the manifest would refuse
    assert _run(*args, "--name", "tiny-new").exit_code == 0


def test_a_new_default_takes_over(manifest, tiny_file, tiny_bytes, tmp_path, monkeypatch):
    # The shipped default, say, with a training fact that happens to be called "default".
    path = manifest(hub_entry(tiny_bytes, default=True) + "[weights.training]\ndefault = true\n")
    args = ["add", str(tiny_file), "--license", "MIT", "--repo-id", REPO, "--revision", COMMIT]

    result = _run(*args, "--name", "tiny-v2", "--default", "--write")
    assert result.exit_code == 0, result.output
    assert "'tiny-hub' is no longer the default" in result.stderr
    assert [(e.name, e.default) for e in list_entries()] == [
        ("tiny-hub", False),
        ("tiny-v2", True),
    ]
    assert list_entries()[0].training == {"default": True}  # data, not the entry's flag
    # A refused entry (a name taken) copies nothing beside the manifest and leaves it as it was.
    before = list_entries()
    result = _run(*args, "--name", "tiny-v2", "--embed", "--write")
    assert result.exit_code == 2 and "appears twice" in result.stderr
    assert not (path.parent / "weights" / "embedded" / "tiny-v2.safetensors").exists()
    assert list_entries() == before


@pytest.mark.parametrize("option", ["--prefer", "--default"])
def test_options_that_edit_entry_tables_refuse_a_manifest_written_otherwise(
    manifest, tiny_file, tiny_bytes, option
):
    # A quoted header is valid TOML: there was no line to place the entry at (an internal
    # error), and the old default stayed beside the new one (a misleading exit 4).
    entry = hub_entry(tiny_bytes, default=True)
    assert entry.startswith("[[weights]]")
    path = manifest(entry.replace("[[weights]]", '[["weights"]]', 1))
    before = path.read_text()
    args = ["add", str(tiny_file), "--license", "MIT", "--repo-id", REPO, "--revision", COMMIT]
    result = _run(*args, "--name", "tiny-v2", "--write", option)
    assert result.exit_code == 2 and f"{option} edits [[weights]] tables" in result.stderr
    assert path.read_text() == before
    assert _run(*args, "--name", "tiny-v2", "--write").exit_code == 0  # without it: added


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_add_writes_through_the_package_symlink(tmp_path, tiny_file):
    real = tmp_path / "weights_manifest.toml"
    real.write_text("# header kept\nschema_version = 1\n")
    link = tmp_path / "pkg" / "weights_manifest.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    add_entry(
        manifest_entry_for(tiny_file, name="t", license="MIT", repo_id=REPO, revision=COMMIT), link
    )
    assert link.is_symlink() and "# header kept" in real.read_text()
    assert [e.name for e in list_entries(link)] == ["t"]


def test_add_refuses_a_checkpoint_that_changes_while_it_is_embedded(
    manifest, tiny_file, tiny_bytes, monkeypatch
):
    # A training run replacing its checkpoint between the entry's hash and the copy left an
    # entry whose embedded file no load would accept ("the installation is damaged").
    import shutil

    path = manifest()
    real_copy = shutil.copyfile

    def replaced_meanwhile(src: object, dst: object) -> object:
        tiny_file.write_bytes(tiny_bytes[:-1] + bytes([tiny_bytes[-1] ^ 1]))
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", replaced_meanwhile)
    args = _add_args(tiny_file, "noise")
    result = _run(*args, "--embed", "--write")
    assert result.exit_code == 2
    assert "changed while it was being added" in result.stderr
    assert list_entries() == []
    assert not (path.parent / "weights/embedded/tiny-emb.safetensors").exists()


def test_verify_checks_embedded_copies(manifest, tiny_bytes, hf_home):
    path = manifest(hub_entry(tiny_bytes, embedded="weights/embedded/t.safetensors"))
    stored = path.parent / "weights" / "embedded" / "t.safetensors"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(tiny_bytes)
    result = _run("verify")
    assert result.exit_code == 0 and "embedded" in result.stdout and "ok" in result.stdout
    stored.write_bytes(tiny_bytes[:-1] + b"\0")
    result = _run("verify")
    assert result.exit_code == 4 and "fix its entry in" in result.stderr
    assert stored.exists()


def test_verify_fails_an_install_without_its_embedded_weights(manifest, tiny_bytes, hf_home):
    # What fix would refuse (exit 4, "the installation is damaged") verify must not pass.
    fields = {"repo_id": None, "filename": None, "revision": None}
    entry = hub_entry(
        tiny_bytes, name="gone", embedded="weights/embedded/gone.safetensors", **fields
    )
    manifest(entry)
    result = _run("verify")
    assert result.exit_code == 4, result.output
    assert "MISSING" in result.stdout
    assert "embedded weights 'gone' are missing" in result.stderr


def test_prefer_puts_the_new_entry_where_model_name_finds_it(
    manifest, tiny_file, tiny_bytes, tmp_path, monkeypatch
):
    other = hub_entry(tiny_bytes, name="clus", model="clusir_t", arch="clusir")
    path = manifest(other, "# the first release\n" + hub_entry(tiny_bytes, name="tiny-v1"))
    args = ["add", str(tiny_file), "--license", "MIT", "--repo-id", REPO, "--revision", COMMIT]

    result = _run(*args, "--name", "tiny-v2", "--prefer")
    assert result.exit_code == 2 and "--write" in result.stderr
    assert _run(*args, "--name", "tiny-v2", "--write").exit_code == 0
    assert entry_for("anyir_t").name == "tiny-v1"  # appended: the older entry still comes first

    assert _run(*args, "--name", "tiny-v3", "--write", "--prefer").exit_code == 0
    assert [e.name for e in list_entries()] == ["clus", "tiny-v3", "tiny-v1", "tiny-v2"]
    assert entry_for("anyir_t").name == "tiny-v3"
    text = path.read_text()
    assert '# the first release\n[[weights]]\nname = "tiny-v1"' in text  # its comment moved with it


def test_list_never_cuts_a_name_a_user_must_type(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped manifest in an 80-column terminal: each entry's name, size and availability
    # on one line, the kinds they all restore said once.
    monkeypatch.setenv("COLUMNS", "80")
    table = _run("list").stdout
    lines = table.splitlines()
    entries = list_entries()
    assert len(entries) > 1
    for e in entries:
        (line,) = [ln for ln in lines if f" {e.name} " in ln]
        assert "MB" in line and "embedded" in line and e.license in line
    assert len(lines) < 8 + 2 * len(entries)  # a row is one line (two for the default)
    summary = " ".join(table.split())
    assert "every entry is trained for noise 15/25/50, blur, haze, low light" in summary


def test_kinds_summary_groups_noise_levels_and_counts_composites() -> None:
    kinds = ["H+R", "L+H+S", "blur", "haze", "low_light", "noise_15", "noise_50", "rain"]
    assert kinds_summary(kinds) == "noise 15/50, blur, haze, low light, rain, 2 composites"
    assert kinds_summary(["noise", "rain"]) == "noise, rain"
    assert kinds_summary(["L+H"]) == "1 composite"


def test_add_refuses_an_entry_that_could_not_be_used(manifest, tiny_file):
    """No place to fetch it from, or a model it is not: exit 2 before the manifest changes."""
    manifest()
    hub = ["--repo-id", REPO, "--revision", COMMIT]
    nowhere = _run("add", str(tiny_file), "--name", "x", "--license", "MIT", "--write")
    assert nowhere.exit_code == 2 and "--repo-id and --revision" in nowhere.stderr
    moving = ["--repo-id", REPO, "--revision", "main"]
    branch = _run("add", str(tiny_file), "--name", "x", "--license", "MIT", *moving, "--write")
    assert branch.exit_code == 2 and "40-hex commit hash" in branch.stderr
    for model in ("clusir_t", "no_such_model"):
        result = _run(
            "add", str(tiny_file), "--name", "x", "--license", "MIT", "--model", model, *hub
        )
        assert result.exit_code == 2, result.output
        assert f"checkpoint of anyir_t (its metadata), not of {model}" in result.stderr
    assert list_entries() == []


def test_license_must_be_an_spdx_expression(manifest, tiny_file):
    """A license a tool can read: a sentence is refused by `weights add` (exit 2, naming
    --license) and by the manifest parser, and real expressions pass both."""
    from anyrestore.weights.manifest import is_license_expression, parse_manifest

    good = [
        "MIT",
        "Apache-2.0",
        "GPL-2.0+",
        "(MIT OR Apache-2.0)",
        "Apache-2.0 WITH LLVM-exception",
        "LicenseRef-anyrestore-weights",
        "CC-BY-4.0 AND (MIT OR BSD-3-Clause)",
        "MIT or Apache-2.0",
    ]
    bad = ["MIT license", "see README", "MIT OR", "(MIT", "MIT)", "OR MIT", "MIT AND AND BSD"]
    assert all(is_license_expression(e) for e in good)
    assert not any(is_license_expression(e) for e in bad)
    manifest()
    hub = ["--repo-id", REPO, "--revision", COMMIT]
    result = _run("add", str(tiny_file), "--name", "x", "--license", "see README", *hub)
    assert result.exit_code == 2 and "--license 'see README'" in result.stderr
    text = manifest_entry_for(tiny_file, name="x", license="MIT", repo_id=REPO, revision=COMMIT)
    with pytest.raises(WeightsError, match="not an SPDX id"):
        parse_manifest(text.replace('"MIT"', '"MIT license"'), source="hand-edited")
    ok = _run("add", str(tiny_file), "--name", "x", "--license", "(MIT OR Apache-2.0)", *hub)
    assert ok.exit_code == 0, ok.output


def test_add_model_names_the_variant_of_a_checkpoint_with_a_custom_name(tmp_path):
    """A custom name in the metadata is not a variant: --model says which one it is."""
    from tinymodels import TINY_ANYIR

    from anyrestore.models import create_model
    from anyrestore.weights import save_checkpoint

    path = tmp_path / "mine.safetensors"
    save_checkpoint(create_model("anyir_t", **TINY_ANYIR), path, name="my-net")
    hub = {"repo_id": REPO, "revision": COMMIT, "trained_for": ["noise"]}
    text = manifest_entry_for(path, name="mine", license="MIT", model="anyir_t", **hub)
    assert tomllib.loads(text)["weights"][0]["model"] == "anyir_t"
    with pytest.raises(UsageError, match="clusir_t is of clusir"):
        manifest_entry_for(path, name="mine", license="MIT", model="clusir_t", **hub)


def test_add_embed_write_creates_a_private_manifest_that_works(tmp_path, tiny_file, monkeypatch):
    manifest = tmp_path / "mine" / "weights_manifest.toml"
    manifest.parent.mkdir()
    monkeypatch.setenv("ANYRESTORE_MANIFEST", str(manifest))
    args = ["add", str(tiny_file), "--name", "tiny-emb", "--license", "MIT"]
    result = _run(*args, "--embed", "--write")
    assert result.exit_code == 0, result.output
    assert [e.name for e in list_entries()] == ["tiny-emb"]
    assert (
        load_weights("tiny-emb").path == manifest.parent / "weights/embedded/tiny-emb.safetensors"
    )


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--name", "../x", "--embed"], "--name '../x': use only letters"),
        (["--name", "x", "--embed", "--revision", COMMIT], "add --repo-id"),
        (["--name", "x", "--embed", "--repo-id", REPO], "add --revision"),
        (["--name", "x", "--repo-id", "a/b/c", "--revision", COMMIT], "is not a Hub repository"),
        (
            [
                "--name",
                "x",
                "--filename",
                "../x.safetensors",
                "--repo-id",
                REPO,
                "--revision",
                COMMIT,
            ],
            "must be a path inside the repository",
        ),
        (["--name", "anyir_s", "--embed"], "--name 'anyir_s' is a model variant's name"),
    ],
)
def test_add_bad_options_are_usage_errors(manifest, tiny_file, extra, said):
    result = _run("add", str(tiny_file), "--license", "MIT", *extra)
    assert result.exit_code == 2 and said in result.stderr


def test_an_entry_named_like_another_variant_is_refused(tiny_file):
    """``--model anyir_s`` would otherwise load that entry and run the anyir_t inside it."""
    text = manifest_entry_for(tiny_file, name="x", license="MIT", repo_id=REPO, revision=COMMIT)
    with pytest.raises(WeightsError, match="'anyir_s' is a model variant's name"):
        parse_manifest(text.replace('name = "x"', 'name = "anyir_s"'), source="hand-edited")
    own = parse_manifest(text.replace('name = "x"', 'name = "anyir_t"'), source="hand-edited")
    assert own[0].name == own[0].model == "anyir_t"  # its own variant's name is no clash


def test_download_refuses_a_path(manifest, tiny_file):
    result = _run("download", str(tiny_file))
    assert result.exit_code == 2 and "needs no download" in result.stderr
    assert "verified" not in result.output


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"repo_id": "me/a/b"}, "is not a Hub repository (org/name)"),
        ({"filename": "../x.safetensors"}, "must be a path inside the repository"),
        ({"filename": "/abs/x.safetensors"}, "must be a path inside the repository"),
        ({"model": "clusir_t"}, "says model 'clusir_t' but arch 'anyir'"),
    ],
)
def test_an_entry_no_command_could_use_makes_the_manifest_invalid(
    manifest, tiny_bytes, fields, said
):
    # Hub coordinates the Hub library refuses failed every list, info and verify (exit 1).
    manifest(hub_entry(tiny_bytes, **fields))
    for command in (["list"], ["list", "--json"], ["info", "tiny-hub"], ["verify"]):
        result = _run(*command)
        assert result.exit_code == 4, result.output
        assert said in result.stderr and "Traceback" not in result.output


def test_names_that_differ_only_in_case_are_one_name(manifest, tiny_bytes):
    # They are file names too (--embed, the Hub cache): one file on macOS and Windows.
    manifest(hub_entry(tiny_bytes, name="tiny-v1"), hub_entry(tiny_bytes, name="TINY-v1"))
    result = _run("list")
    assert result.exit_code == 4
    assert "'TINY-v1' differs from 'tiny-v1' only in case" in result.stderr


def test_a_name_that_ends_like_a_file_is_refused(manifest, tiny_bytes, tiny_file):
    # --weights tiny.pt reads a file: an entry named so could never be loaded by its name.
    from anyrestore.weights.convert import PICKLE_SUFFIXES
    from anyrestore.weights.manifest import FILE_SUFFIXES

    assert FILE_SUFFIXES == PICKLE_SUFFIXES | {".safetensors"}
    manifest(hub_entry(tiny_bytes, name="tiny.pt"))
    listed = _run("list")
    assert listed.exit_code == 4 and "'tiny.pt' ends like a file name" in listed.stderr
    manifest()
    added = _run(*_add_args(tiny_file, "rain")[:3], "mine.safetensors", "--license", "MIT")
    assert added.exit_code == 2 and "no file suffix" in added.stderr


def test_json_listings_stay_json_when_a_fact_is_not_a_number(manifest, tiny_bytes):
    manifest(hub_entry(tiny_bytes) + "[weights.training]\nval_psnr = nan\nsteps = 10\n")

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    for command in (["list", "--json"], ["info", "tiny-hub", "--json"]):
        result = _run(*command)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout, parse_constant=refuse)
        row = out[0] if isinstance(out, list) else out
        assert row["training"]["val_psnr"] is None and row["training"]["steps"] == 10


def test_add_takes_any_header_spelling_odd_metadata_and_any_description(
    manifest, tiny_bytes, tmp_path
):
    path = manifest(hub_entry(tiny_bytes, name="tiny-v1").replace("[[weights]]", "[[ weights ]]"))
    odd = tmp_path / "odd.safetensors"  # trained_for written as one number, not a list
    torch.manual_seed(0)
    save_checkpoint(create_model("anyir_t", **TINY), odd, name="anyir_t", extra={"trained_for": 25})
    args = ["add", str(odd), "--license", "MIT", "--repo-id", REPO, "--revision", COMMIT]
    result = _run(*args, "--name", "tiny-v2", "--write", "--prefer", "--description", "a\x7fb")
    assert result.exit_code == 0, result.output
    assert [e.name for e in list_entries()] == ["tiny-v2", "tiny-v1"]
    added = find_entry("tiny-v2")
    assert added is not None and added.trained_for == ("25",) and added.description == "a\x7fb"
    assert "[[ weights ]]" in path.read_text()


def test_embedding_where_nothing_can_be_written_is_a_usage_error(tmp_path, tiny_file, monkeypatch):
    (tmp_path / "weights").write_text("a file where the folder should be")
    monkeypatch.setenv("ANYRESTORE_MANIFEST", str(tmp_path / "m.toml"))
    (tmp_path / "m.toml").write_text("schema_version = 1\n")
    result = _run("add", str(tiny_file), "--license", "MIT", "--name", "x", "--embed", "--write")
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.stderr and "Traceback" not in result.output


def test_add_with_a_manifest_that_is_not_text_is_a_weights_error(manifest, tiny_file):
    path = manifest()
    path.write_bytes(b"schema_version = 1\n# caf\xe9\n")  # Latin-1, not UTF-8
    result = _run("add", str(tiny_file), "--license", "MIT", "--name", "x", "--embed")
    assert result.exit_code == 4, result.output
    assert "is not UTF-8 text" in result.stderr and "internal error" not in result.stderr


def test_add_asks_for_trained_for_when_the_metadata_is_silent(manifest, tmp_path):
    silent = tmp_path / "silent.safetensors"
    torch.manual_seed(0)
    save_checkpoint(create_model("anyir_t", **TINY), silent, name="anyir_t")
    args = ["add", str(silent), "--license", "MIT", "--name", "x", "--embed"]
    result = _run(*args)
    assert result.exit_code == 2 and "pass --trained-for" in result.stderr, result.output
    assert _run(*args, "--trained-for", "noise").exit_code == 0


def test_download_of_an_embedded_entry_says_nothing_was_downloaded(manifest, tiny_file):
    manifest()
    added = _run("add", str(tiny_file), "--license", "MIT", "--name", "emb", "--embed", "--write")
    assert added.exit_code == 0, added.output
    result = _run("download", "emb")
    assert result.exit_code == 0, result.output
    assert "embedded in the package, nothing to download" in result.stderr
    assert Path(result.stdout.strip()).is_file()
