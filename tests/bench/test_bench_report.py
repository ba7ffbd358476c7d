"""Reports: JSON and CSV parse back; the table shows models, averages and gains."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from rich.console import Console

from anyrestore.bench.candidates import Candidate, identity_candidate
from anyrestore.bench.quality import Pair, run_quality
from anyrestore.bench.report import (
    per_image_table,
    quality_table,
    speed_table,
    to_csv,
    to_json,
)
from anyrestore.bench.suites import suite_tasks
from anyrestore.metrics import psnr


def _records() -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 24, 24, generator=gen)
    pairs = [
        Pair("sots", "x", (clean * 0.5).clamp(0, 1), clean),
        Pair("rain100l", "y", (clean + 0.1).clamp(0, 1), clean),
        Pair("rain100l", "z", clean.clone(), clean),  # identical: infinite PSNR
    ]
    # most of the way back from the first pair's halving: a real gain there
    better = Candidate(
        "brighter", "test", lambda x: (1.6 * x).clamp(0, 1), model=torch.nn.Identity()
    )
    return run_quality([identity_candidate(), better], suite_tasks("three"), pairs, suite="three")


def test_json_is_strict_and_has_the_keys() -> None:
    records = _records()
    parsed = json.loads(
        to_json(records), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
    )
    assert len(parsed) == 6  # 2 models x (2 test sets + average)
    for r in parsed:
        assert {"model", "suite", "kind", "psnr", "ssim", "psnr_gain"} <= set(r)
    rain = [r for r in parsed if r["kind"] == "rain100l" and r["model"] == "identity"]
    assert len(rain) == 1 and rain[0]["psnr"] is None  # mean with an infinite PSNR
    sots = next(r for r in parsed if r["kind"] == "sots" and r["model"] == "identity")
    clean = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert math.isclose(sots["psnr"], psnr((clean * 0.5).double(), clean.double()).item())


def test_csv_parses_back() -> None:
    records = _records()
    rows = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert len(rows) == len(records)
    assert list(rows[0])[:5] == ["model", "suite", "kind", "psnr", "ssim"]
    assert float(rows[0]["ssim"]) == records[0]["ssim"]
    # The speed suite's list of runtimes reads as values, not as a Python list.
    speed = [{"model": "m", "suite": "speed", "runtimes": ["torch", "openvino"]}]
    (row,) = csv.DictReader(io.StringIO(to_csv(speed)))
    assert row["runtimes"].split(";") == ["torch", "openvino"]


def test_quality_table_shows_models_average_and_gain() -> None:
    console = Console(width=200, record=True)
    console.print(quality_table(_records(), "t"))
    text = console.export_text()
    assert "brighter" in text and "identity" in text and "ΔPSNR" in text
    assert "Average" in text and "Dehazing SOTS" in text and "inf" in text
    gain = next(
        r["psnr_gain"] for r in _records() if (r["model"], r["kind"]) == ("brighter", "sots")
    )
    assert gain > 1 and f"+{gain:.2f}" in text


def test_speed_table() -> None:
    rec = {
        "model": "m",
        "size": "16x16",
        "device": "cpu",
        "seconds": 0.5,
        "megapixels_per_s": 0.000512,
        "peak_mem_mb": None,
    }
    console = Console(width=200, record=True)
    console.print(speed_table([rec], "s"))
    text = console.export_text()
    assert "16x16" in text and "0.5000" in text and "0.000512" in text


def _per_image_records() -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(3, 24, 24, generator=gen)
    pairs = [
        Pair("sots", "x", (clean * 0.5).clamp(0, 1), clean),
        Pair("sots", "w", (clean * 0.8).clamp(0, 1), clean),
        Pair("rain100l", "y", (clean + 0.1).clamp(0, 1), clean),
    ]
    # Doubles the input's darkening error on "x" only: the mean hides which image it ruined.
    ruin_x = Candidate(
        "ruin-x",
        "test",
        lambda x: (x * 0.5).clamp(0, 1) if x.mean() < 0.3 else x,
        model=torch.nn.Identity(),
    )
    return run_quality(
        [identity_candidate(), ruin_x], suite_tasks("three"), pairs, suite="three", per_image=True
    )


def test_per_image_records_follow_each_model_and_average_to_its_row() -> None:
    records = _per_image_records()
    assert not any("image" in r for r in _records())  # only on request
    images = [r for r in records if "image" in r]
    assert [(r["model"], r["kind"], r["image"]) for r in images] == [
        (m, k, n) for m in ("identity", "ruin-x") for k, n in (("sots", "x"), ("sots", "w"),
                                                                ("rain100l", "y"))
    ]  # fmt: skip
    rows = {(r["model"], r["kind"]): r for r in records if "image" not in r}
    for model in ("identity", "ruin-x"):
        sots = [r["psnr"] for r in images if r["model"] == model and r["kind"] == "sots"]
        assert rows[(model, "sots")]["psnr"] == pytest.approx(sum(sots) / 2)
        assert rows[(model, "average")]["images"] == 3  # per-image rows are not counted twice
    gains = {r["image"]: r["psnr_gain"] for r in images if r["model"] == "ruin-x"}
    assert gains["x"] < -1.0 and gains["w"] == 0.0 and gains["y"] == 0.0
    assert all(r["psnr_gain"] == 0.0 for r in images if r["model"] == "identity")
    rows_csv = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert "image" in rows_csv[0] and sum(1 for r in rows_csv if r["image"]) == 6


def test_per_image_table_names_every_image_and_the_summary_table_skips_them() -> None:
    records = _per_image_records()
    console = Console(width=200, record=True)
    console.print(per_image_table(records, "per image"))
    text = console.export_text()
    line = next(row for row in text.splitlines() if "│ x " in row)
    assert "Dehazing SOTS" in line and "-" in line.split("│")[-2]  # ruin-x lost on x
    assert "Average" not in text and "ΔPSNR" in text
    console = Console(width=200, record=True)
    console.print(quality_table(records, "t"))
    assert "│ x " not in console.export_text()
