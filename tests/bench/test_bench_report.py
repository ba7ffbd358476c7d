"""Reports: JSON and CSV parse back; the table shows models, averages and gains."""

from __future__ import annotations

import csv
import io
import json
import math

import torch
from rich.console import Console

from anyrestore.bench.candidates import Candidate, identity_candidate
from anyrestore.bench.quality import Pair, run_quality
from anyrestore.bench.report import quality_table, speed_table, to_csv, to_json
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
    better = Candidate("half-way", "test", lambda x: x, model=torch.nn.Identity())
    return run_quality([identity_candidate(), better], suite_tasks("three"), pairs, suite="three")


def test_json_is_strict_and_has_the_keys() -> None:
    records = _records()
    parsed = json.loads(
        to_json(records), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
    )
    assert len(parsed) == 6  # 2 models x (2 test sets + average)
    for r in parsed:
        assert {"model", "suite", "kind", "psnr", "ssim", "psnr_gain"} <= set(r)
    rain = [r for r in parsed if r["kind"] == "rain100l"]
    assert all(r["psnr"] is None for r in rain)  # mean with an infinite PSNR
    sots = next(r for r in parsed if r["kind"] == "sots" and r["model"] == "identity")
    clean = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert math.isclose(sots["psnr"], psnr((clean * 0.5).double(), clean.double()).item())


def test_csv_parses_back() -> None:
    records = _records()
    rows = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert len(rows) == len(records)
    assert list(rows[0])[:5] == ["model", "suite", "kind", "psnr", "ssim"]
    assert float(rows[0]["ssim"]) == records[0]["ssim"]


def test_quality_table_shows_models_average_and_gain() -> None:
    console = Console(width=200, record=True)
    console.print(quality_table(_records(), "t"))
    text = console.export_text()
    assert "half-way" in text and "identity" in text and "ΔPSNR" in text
    assert "Average" in text and "Dehazing SOTS" in text and "inf" in text


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
