"""Fixtures shared across test folders; keep them generic."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Every test runs torch on one intra-op thread, and gets back what it changed.

    The tests run tiny models, where a second thread only adds overhead; on a shared 2-core
    machine the two OpenMP threads wait for a busy core and a tiny forward pass runs 10-50x
    slower than on one. Function scope also undoes a test (or the code under test, e.g.
    ``train.threads``) that sets its own count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _logger_as_it_was() -> Iterator[None]:
    """The ``anyrestore`` logger's level and handlers back as they were: a command run with
    ``--quiet`` leaves it at ERROR, and a later test's expected warning never reached caplog."""
    import logging

    logger = logging.getLogger("anyrestore")
    level, handlers = logger.level, list(logger.handlers)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The bf16 probe's and OpenVINO's caches go to a temporary folder; subprocesses use one
    thread too."""
    os.environ["ANYRESTORE_CACHE"] = str(tmp_path_factory.mktemp("anyrestore-cache"))
    os.environ["OMP_NUM_THREADS"] = "1"
    # Commands run on eager PyTorch unless a test asks for OpenVINO (which converts the
    # model once per weights file, half a minute for the shipped ones).
    os.environ["ANYRESTORE_RUNTIME"] = "torch"
    # What the developer's shell may set would change what the tests see: another manifest,
    # pixel limit, Hub, offline mode, or a torchrun rank that shards every batch.
    for name in _OUTER_SETTINGS:
        os.environ.pop(name, None)


_OUTER_SETTINGS = (
    "ANYRESTORE_MANIFEST",
    "ANYRESTORE_MAX_PIXELS",
    "ANYRESTORE_DEBUG",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
)


@pytest.fixture(autouse=True)
def _no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, ``precision="auto"`` is fp32 whatever this CPU has; tests/test_compute.py
    sets the CPU it wants. Subprocess tests see the real CPU."""
    import anyrestore.compute

    monkeypatch.setattr(anyrestore.compute, "native_bf16", lambda: None)


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """In-process, timing probes see a machine with nothing else running, so that whether a
    measurement is cached does not depend on what else runs beside the tests;
    tests/test_compute.py sets a busy one."""
    import anyrestore.compute

    path = tmp_path_factory.getbasetemp() / "loadavg"
    path.write_text("0.00 0.00 0.00 1/100 1\n")
    monkeypatch.setattr(anyrestore.compute, "LOADAVG", path)
    monkeypatch.setattr(anyrestore.compute, "_measured", {})


@pytest.fixture
def bf16_probe_kernels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    """A CPU with native bf16 whose bf16 measurement finds no gain (so fp32 is chosen),
    measured afresh: the list collects the 1x1-kernel switch each measurement was handed."""
    import anyrestore.compute

    handed: list[object] = []

    def measure(model: torch.nn.Module, device: torch.device, kernels: object = None) -> float:
        handed.append(kernels)
        return 1.0

    monkeypatch.setattr(anyrestore.compute, "native_bf16", lambda: "amx_bf16")
    monkeypatch.setattr(anyrestore.compute, "_time_bf16", measure)
    monkeypatch.setenv("ANYRESTORE_CACHE", str(tmp_path))  # not a remembered measurement
    return handed


@pytest.fixture
def avif_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pillow whose libavif decodes and cannot encode: AVIF is read, never written (as the
    formats module makes EXTENSIONS there). Skips where this Pillow has no AVIF at all."""
    from anyrestore.engine.imageio import avif_supported, formats

    if not avif_supported():
        pytest.skip("this Pillow has no AVIF")
    monkeypatch.delitem(formats.EXTENSIONS, ".avif")


@pytest.fixture
def unreadable_folders(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Paths added to the returned set list as a folder without read permission does, even
    for root (who can read every folder, so ``chmod`` cannot make one in CI)."""
    blocked: set[str] = set()
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if os.fspath(path) in blocked:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", os.fspath(path))  # type: ignore[arg-type]
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    return blocked


@pytest.fixture
def case_insensitive_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.stat`` and ``os.access`` find a missing name under another case in its folder,
    as on macOS or an SD card (FAT, exFAT), where ``Trip`` and ``trip`` name one folder."""

    def found(path: object) -> object:
        wanted = Path(os.fspath(path))  # type: ignore[arg-type]
        if not os.path.lexists(wanted) and wanted.parent.is_dir():
            for name in os.listdir(wanted.parent):
                if name.casefold() == wanted.name.casefold():
                    return wanted.parent / name
        return path

    real_stat, real_access = os.stat, os.access
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(found(path), *a, **k))
    monkeypatch.setattr(os, "access", lambda path, *a, **k: real_access(found(path), *a, **k))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded anyir_t checkpoint with a tiny config (random weights), for CLI and engine tests."""
    from anyrestore.models import create_model
    from anyrestore.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_checkpoint(create_model("anyir_t", **TINY_ANYIR), path)


@pytest.fixture(scope="session")
def model_rows() -> list[dict]:
    """``describe_models(224)`` for every variant: counting their MACs takes seconds, and the
    README's table and the ``models`` command's are both checked against it."""
    from anyrestore.bench.complexity import describe_models

    return describe_models(224)
