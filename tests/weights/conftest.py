"""Fixtures for the weights tests: a tiny checkpoint, a private manifest, a stand-in Hub."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubserver import FakeHub
from tinymodels import TINY_ANYIR as TINY

from anyrestore.models import create_model
from anyrestore.weights import save_checkpoint


@pytest.fixture(scope="session")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real anyir_t checkpoint (tiny config), as bytes."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model = create_model("anyir_t", **TINY)
    extra = {"trained_for": ["noise", "rain"], "training": {"steps": 10, "dataset": "synthetic"}}
    save_checkpoint(model, path, name="anyir_t", extra=extra)
    return path.read_bytes()


@pytest.fixture
def tiny_file(tmp_path: Path, tiny_bytes: bytes) -> Path:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(tiny_bytes)
    return path


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a private manifest (``manifest(*entry_blocks)``) and point ANYRESTORE_MANIFEST at it."""
    path = tmp_path / "manifest" / "weights_manifest.toml"
    path.parent.mkdir()

    def write(*entries: str) -> Path:
        path.write_text("schema_version = 1\n\n" + "\n".join(entries), encoding="utf-8")
        return path

    write()
    monkeypatch.setenv("ANYRESTORE_MANIFEST", str(path))
    return write


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache under tmp_path, online, no token, no telemetry."""
    import huggingface_hub.constants

    # With telemetry on, the client's User-Agent fetches {import-time ENDPOINT}/api/agent-harnesses
    # once per process: that would be huggingface.co, i.e. the network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    for var in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(params=[True, False], ids=["lfs-redirect", "direct"])
def fake_hub(
    request: pytest.FixtureRequest, hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHub]:
    """The stand-in Hub, with HF_ENDPOINT pointing at it; both answer styles of the real Hub."""
    hub = FakeHub(lfs_redirect=request.param)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    yield hub
    hub.stop()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Skip huggingface_hub's retry sleeps (1+2+4+8+8 s) so failure tests stay fast; returns the waits."""
    import huggingface_hub.file_download as file_download
    import huggingface_hub.utils._http as http

    waits: list[float] = []

    class _Time:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    monkeypatch.setattr(http, "time", _Time())
    monkeypatch.setattr(file_download, "time", _Time())
    return waits
