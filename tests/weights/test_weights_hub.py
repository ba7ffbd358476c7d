"""The real download path (huggingface_hub.hf_hub_download) against a local stand-in Hub."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from weightkit import COMMIT, REPO, cache_files, hub_entry

from anyrestore.errors import WeightsError
from anyrestore.models import RestorationModel
from anyrestore.weights import cached_file, find_entry, load_weights, resolve_weights
from anyrestore.weights import resolve as resolve_module


def _tampered(data: bytes) -> bytes:
    # Same size, one flipped byte in the tensor data: only the sha256 can tell.
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def _blobs(home: Path) -> list[Path]:
    return [p for p in cache_files(home) if "blobs" in p.parts or "snapshots" in p.parts]


def test_first_download_then_cache_hits_offline_and_with_server_down(
    fake_hub, manifest, tiny_bytes, hf_home, monkeypatch
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes))

    path = resolve_weights("tiny-hub")
    assert path.read_bytes() == tiny_bytes
    assert hf_home in path.parents  # the library's normal cache under HF_HOME
    methods = [m for m, _, _ in fake_hub.requests]
    assert methods == ["HEAD", "GET"]
    assert cached_file(find_entry("tiny-hub")) == path

    model = load_weights("tiny-hub").model
    assert isinstance(model, RestorationModel) and model.arch == "anyir" and not model.training
    saved = load_safetensors(tiny_bytes)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key

    fake_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_weights("tiny-hub") == path
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fake_hub.stop()
    assert load_weights("tiny-hub").model.arch == "anyir"
    assert fake_hub.requests == []  # a pinned commit already cached needs no network at all


def test_a_cached_copy_and_offline_mode_never_call_the_hub_client(
    fake_hub, manifest, tiny_bytes, hf_home, monkeypatch
):
    # Even answering from its cache, the client builds request headers, and with its default
    # telemetry that fetches a list from huggingface.co: a cache hit must not call it at all.
    import huggingface_hub

    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(
        hub_entry(tiny_bytes),
        hub_entry(tiny_bytes, name="tiny-elsewhere", filename="b.safetensors"),
    )
    path = resolve_weights("tiny-hub")
    calls: list[tuple] = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: calls.append(a))
    assert resolve_weights("tiny-hub") == path
    assert resolve_weights("tiny-hub", offline=True) == path
    with pytest.raises(WeightsError, match="not cached and offline"):
        resolve_weights("tiny-elsewhere", offline=True)
    assert calls == []


@pytest.mark.parametrize("etag", ["honest", "lying"])
def test_tampered_download_is_rejected_deleted_and_redownloaded(
    fake_hub, manifest, tiny_bytes, hf_home, etag
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", _tampered(tiny_bytes))
    if etag == "lying":  # a mirror announcing the expected hash for different bytes
        fake_hub.repos[REPO].etag_override["tiny.safetensors"] = hashlib.sha256(
            tiny_bytes
        ).hexdigest()
    manifest(hub_entry(tiny_bytes))

    # Bytes the server sends whole under their own hash will come again: say so, not "retry".
    said = {
        "honest": f"got sha256 .* from {fake_hub.url} .*deleted the download. The manifest "
        "entry or the server is wrong: running again will not help",
        "lying": "checksum mismatch.*deleted the bad cached file, run again to re-download",
    }[etag]
    with pytest.raises(WeightsError, match=said):
        load_weights("tiny-hub")
    assert _blobs(hf_home) == []
    assert cached_file(find_entry("tiny-hub")) is None

    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)  # the Hub is fixed
    assert resolve_weights("tiny-hub").read_bytes() == tiny_bytes
    assert [m for m, _, _ in fake_hub.requests].count("GET") == 2


def test_wrong_size_is_reported_as_a_size(fake_hub, manifest, tiny_bytes, hf_home):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes + b"\0")
    manifest(hub_entry(tiny_bytes))
    with pytest.raises(WeightsError, match=f"expected size {len(tiny_bytes)}, got size"):
        resolve_weights("tiny-hub")
    assert _blobs(hf_home) == []


def test_offline_and_not_cached_makes_no_request(
    fake_hub, manifest, tiny_bytes, hf_home, monkeypatch
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="not cached and offline mode is on") as info:
        load_weights("tiny-hub")
    assert "anyrestore weights download tiny-hub" in str(info.value)
    with pytest.raises(WeightsError, match="not cached and offline"):
        resolve_weights("tiny-hub", offline=True)  # the argument wins over the environment too
    assert fake_hub.requests == []
    assert _blobs(hf_home) == []


def test_server_down_is_a_network_error_and_leaves_no_cache(
    fake_hub, manifest, tiny_bytes, hf_home, no_backoff
):
    manifest(hub_entry(tiny_bytes))
    fake_hub.stop()
    with pytest.raises(
        WeightsError, match=f"could not download weights 'tiny-hub'.*{fake_hub.url}"
    ):
        load_weights("tiny-hub")
    assert no_backoff  # the client retried (we only skipped its waits)
    assert _blobs(hf_home) == []


@pytest.mark.parametrize("stage", ["head", "get"])
def test_http_500_is_a_network_error_and_leaves_nothing_half_written(
    fake_hub, manifest, tiny_bytes, hf_home, no_backoff, stage
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes))
    setattr(fake_hub, f"fail_{stage}", 500)
    with pytest.raises(WeightsError, match="could not download weights 'tiny-hub'.*500"):
        resolve_weights("tiny-hub")
    leftovers = [p for p in cache_files(hf_home) if "blobs" in p.parts or p.suffix == ".incomplete"]
    assert leftovers == [] and _blobs(hf_home) == []

    setattr(fake_hub, f"fail_{stage}", None)  # the Hub recovers: a retry just works
    assert resolve_weights("tiny-hub").read_bytes() == tiny_bytes


def test_a_gated_repo_says_what_access_needs_not_that_it_is_missing(fake_hub, manifest, tiny_bytes):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    fake_hub.gated.add(REPO)
    manifest(hub_entry(tiny_bytes))
    with pytest.raises(WeightsError, match="gated repository .* set HF_TOKEN") as raised:
        load_weights("tiny-hub")
    assert "not found" not in str(raised.value)


@pytest.mark.parametrize(
    ("repo", "revision", "filename"),
    [
        ("anyrestore-test/missing", COMMIT, "tiny.safetensors"),
        (REPO, "f" * 40, "tiny.safetensors"),
        (REPO, COMMIT, "other.safetensors"),
    ],
    ids=["repo", "revision", "file"],
)
def test_missing_on_the_hub(fake_hub, manifest, tiny_bytes, repo, revision, filename):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes, repo_id=repo, revision=revision, filename=filename))
    with pytest.raises(WeightsError, match="not found on the Hub"):
        resolve_weights("tiny-hub")


def test_wrong_architecture_in_manifest(fake_hub, manifest, tiny_bytes, hf_home):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes, model="clusir_t", arch="clusir"))
    with pytest.raises(WeightsError, match="holds a 'anyir' model, expected 'clusir'"):
        load_weights("tiny-hub")


def test_model_name_resolves_to_its_preferred_entry(fake_hub, manifest, tiny_bytes, hf_home):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    other = hub_entry(tiny_bytes, name="tiny-other", filename="absent.safetensors")
    manifest(other, hub_entry(tiny_bytes, default=True))  # the default entry is preferred
    assert load_weights("anyir_t").model.arch == "anyir"
    assert all("absent" not in path for _, path, _ in fake_hub.requests)


def test_entry_with_hub_and_missing_embedded_copy_downloads(
    fake_hub, manifest, tiny_bytes, hf_home
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes, embedded="weights/embedded/absent.safetensors", default=True))
    path = resolve_weights(None)
    assert hf_home in path.parents and path.read_bytes() == tiny_bytes


def test_damaged_cached_copy_offline_says_to_run_again_online(
    fake_hub, manifest, tiny_bytes, hf_home, monkeypatch
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes))
    path = resolve_weights("tiny-hub")
    path.resolve().write_bytes(_tampered(tiny_bytes))  # the disk, not the server, went bad
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="deleted the bad cached file, run again online"):
        resolve_weights("tiny-hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_weights("tiny-hub").read_bytes() == tiny_bytes


def test_two_entries_disagreeing_about_one_hub_file_are_refused(manifest, tiny_bytes):
    """Else verifying the wrong one would delete the copy the right one had verified."""
    manifest(hub_entry(tiny_bytes), hub_entry(tiny_bytes, name="other", sha256="0" * 64))
    with pytest.raises(WeightsError, match="'tiny-hub' and 'other' name the same Hub file"):
        load_weights("tiny-hub")


def _shared_store_copy(hf_home: Path, data: bytes, etag: str) -> list[Path]:
    """A cached file as huggingface_hub 1.x and later keep a Xet file: snapshots/<commit>/
    <file> -> blobs/<etag> -> the cache-wide store's blobs/xx/<xet hash> (the bytes).
    Returns the three, the snapshot link first."""
    cache = hf_home / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    xet_hash = hashlib.sha256(b"xet:" + data).hexdigest()
    store = cache / "blobs" / xet_hash[:2] / xet_hash
    blob = repo / "blobs" / etag
    pointer = repo / "snapshots" / COMMIT / "tiny.safetensors"
    for path in (store, blob, pointer):
        path.parent.mkdir(parents=True, exist_ok=True)
    store.write_bytes(data)
    blob.symlink_to(Path("../../blobs") / xet_hash[:2] / xet_hash)
    pointer.symlink_to(Path("../../blobs") / etag)
    assert pointer.read_bytes() == data
    return [pointer, blob, store]


def test_server_bytes_in_the_shared_store_are_not_fetched_again(manifest, tiny_bytes, hf_home):
    # Through the shared store the bytes' file is named by its Xet hash: bytes the server sent
    # whole under their own sha256 were called a damaged copy, to be downloaded again, forever.
    bad = _tampered(tiny_bytes)
    chain = _shared_store_copy(hf_home, bad, hashlib.sha256(bad).hexdigest())
    manifest(hub_entry(tiny_bytes))
    with pytest.raises(WeightsError, match="deleted the download. .*running again will not help"):
        resolve_weights("tiny-hub", offline=True)
    assert not any(os.path.lexists(p) for p in chain)  # the bad bytes are gone for every repo


def test_a_bad_copy_in_a_read_only_cache_says_what_to_delete(
    manifest, tiny_bytes, hf_home, monkeypatch
):
    # A shared, read-only cache: the failed delete escaped as a raw PermissionError (exit 1).
    chain = _shared_store_copy(
        hf_home, _tampered(tiny_bytes), hashlib.sha256(tiny_bytes).hexdigest()
    )
    manifest(hub_entry(tiny_bytes))

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(
        WeightsError,
        match=r"could not delete the bad cached file \(Permission denied\): delete "
        rf"{re.escape(str(chain[0]))} and what it links to, then run again",
    ):
        resolve_weights("tiny-hub", offline=True)
    monkeypatch.undo()
    assert all(p.exists() for p in chain)


def test_a_cached_copy_that_cannot_be_read_is_a_weights_error(
    fake_hub, manifest, tiny_bytes, hf_home, monkeypatch
):
    fake_hub.publish(REPO, COMMIT, "tiny.safetensors", tiny_bytes)
    manifest(hub_entry(tiny_bytes))
    path = resolve_weights("tiny-hub")

    def unreadable(path: object) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(resolve_module, "sha256_file", unreadable)
    with pytest.raises(
        WeightsError,
        match=f"cannot read the cached weights 'tiny-hub' .*{path.name}.*Permission denied",
    ):
        resolve_weights("tiny-hub")


def test_a_failed_xet_transfer_is_a_download_error(manifest, tiny_bytes, hf_home, monkeypatch):
    # hf_xet reports a broken transfer as a plain RuntimeError: it was called an internal error.
    import huggingface_hub

    def xet_fails(*args: object, **kwargs: object) -> str:
        raise RuntimeError("Data processing error: CAS service error : Reqwest Error: timed out")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", xet_fails)
    manifest(hub_entry(tiny_bytes))
    with pytest.raises(WeightsError, match="could not download weights 'tiny-hub' .*CAS service"):
        resolve_weights("tiny-hub")


def test_a_cache_folder_that_cannot_be_listed_is_a_weights_error(
    manifest, tiny_bytes, hf_home, monkeypatch
):
    import huggingface_hub

    manifest(hub_entry(tiny_bytes))
    entry = find_entry("tiny-hub")
    assert entry is not None

    def unlistable(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(hf_home))

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", unlistable)
    with pytest.raises(WeightsError, match="cannot read the weights cache .*Permission denied"):
        cached_file(entry)
