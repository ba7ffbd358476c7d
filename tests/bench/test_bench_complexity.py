"""``anyrestore models``' figures: counted once, then kept until the code that gives them changes."""

from __future__ import annotations

import pytest

from anyrestore.bench import complexity
from anyrestore.models import create_model


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("ANYRESTORE_CACHE", str(tmp_path))
    return tmp_path / "complexity.json"


def _forbid_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    def counted(*args, **kwargs):
        raise AssertionError("counted again")

    monkeypatch.setattr(complexity, "count_macs", counted)


def test_figures_are_counted_once_and_kept(monkeypatch: pytest.MonkeyPatch, cache) -> None:
    (first,) = complexity.describe_models(64, ["clusir_t"])
    assert first["params"] == complexity.count_params(create_model("clusir_t")) == 6_803_722
    assert first["flops_224"] > first["flops"] > 0  # 224 px costs more than 64 px
    _forbid_counting(monkeypatch)
    (again,) = complexity.describe_models(64, ["clusir_t"])
    assert again == first


def test_changed_code_is_counted_again(monkeypatch: pytest.MonkeyPatch, cache) -> None:
    complexity.describe_models(64, ["clusir_t"])
    monkeypatch.setattr(complexity, "_counter_digest", lambda: "another")
    _forbid_counting(monkeypatch)
    with pytest.raises(AssertionError, match="counted again"):
        complexity.describe_models(64, ["clusir_t"])


def test_an_unreadable_cache_is_counted_again(cache) -> None:
    cache.write_text("{not json")
    (row,) = complexity.describe_models(64, ["clusir_t"])
    assert row["flops"] > 0
    assert '"clusir_t|64|' in cache.read_text()


def test_a_size_too_large_to_count_is_a_device_error(monkeypatch: pytest.MonkeyPatch, cache):
    """The count runs one whole forward pass: out of memory says so and exits 5, not 1."""
    from typer.testing import CliRunner

    from anyrestore.cli.app import app

    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate"
        )

    monkeypatch.setattr(complexity.torch, "rand", no_memory)
    result = CliRunner().invoke(app, ["models", "--size", "4000", "--model", "clusir_t"])
    assert result.exit_code == 5, result.output
    assert "counting MACs at 4000x4000 needs more memory" in result.stderr
    assert "Traceback" not in result.output
