"""Paired comparison of two bench runs (anyrestore/bench/compare.py, benchmarks/compare_bench.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from benchkit import BENCHMARKS, ROOT, load_script

from anyrestore.bench.compare import paired_deltas, pick_model, verdict
from anyrestore.errors import DataError, UsageError


def run_records(model: str, scores: dict[str, list[float]], inputs: dict[str, list[float]]):
    """What `bench --per-image --json --baseline identity` writes, for the fields compared."""
    records = []
    for label, source, table in (("identity", "baseline", inputs), (model, "weights", scores)):
        for kind, values in table.items():
            records.append(
                {
                    "model": label,
                    "source": source,
                    "kind": kind,
                    "images": len(values),
                    "psnr": sum(values) / len(values),
                }
            )
            records.extend(
                {
                    "model": label,
                    "source": source,
                    "kind": kind,
                    "image": f"p{i}",
                    "images": 1,
                    "psnr": v,
                }
                for i, v in enumerate(values)
            )
        records.append({"model": label, "source": source, "kind": "average", "psnr": 0.0})
    return records


INPUTS = {"noise_15": [25.0, 24.0, 26.0], "L+H": [10.0, 11.0, 9.0]}


def test_deltas_are_paired_per_image():
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0], "L+H": [17.0, 18.0, 16.0]}, INPUTS)
    new = run_records("new", {"noise_15": [31.5, 30.1, 32.3], "L+H": [16.0, 18.5, 16.2]}, INPUTS)
    deltas = {d.kind: d for d in paired_deltas(old, new, old_model="old", new_model="new")}
    noise = deltas["noise_15"]
    assert noise.delta == pytest.approx(0.3)
    assert noise.old == pytest.approx(31.0) and noise.new == pytest.approx(31.3)
    assert noise.ahead == 3 and noise.images == 3
    # differences 0.5, 0.1, 0.3: sd 0.2, standard error 0.2 / sqrt(3)
    assert noise.stderr == pytest.approx(0.2 / math.sqrt(3))
    lh = deltas["L+H"]
    assert lh.delta == pytest.approx((-1.0 + 0.5 + 0.2) / 3)
    assert lh.ahead == 2


def test_release_rule_and_strict_rule():
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0], "L+H": [17.0, 18.0, 16.0]}, INPUTS)
    slightly = run_records("new", {"noise_15": [31.0, 30.0, 31.9], "L+H": [18, 19, 17]}, INPUTS)
    v = verdict(paired_deltas(old, slightly, old_model="old", new_model="new"))
    assert v.release and not v.every_kind
    assert v.worst.kind == "noise_15" and v.worst.delta == pytest.approx(-0.1 / 3)

    much = run_records("new", {"noise_15": [30.0, 30.0, 32.0], "L+H": [18, 19, 17]}, INPUTS)
    v = verdict(paired_deltas(old, much, old_model="old", new_model="new"))
    assert v.mean_delta > 0 and not v.release  # noise_15 -0.33 dB: over the 0.1 dB tolerance

    worse = run_records("new", {"noise_15": [31.0, 30.0, 32.0], "L+H": [17, 18, 15.9]}, INPUTS)
    assert not verdict(paired_deltas(old, worse, old_model="old", new_model="new")).release


def test_runs_on_different_inputs_are_refused():
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": [25.0, 24.0, 26.0]})
    new = run_records("new", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": [25.0, 24.5, 26.0]})
    with pytest.raises(DataError, match="degraded p1"):
        paired_deltas(old, new, old_model="old", new_model="new")


def test_runs_scored_on_another_channel_are_refused_naming_the_option():
    # Luma PSNR differs from RGB PSNR by more than the release rule's tolerance; the inputs'
    # scores alone would blame the degradations (or, in older runs, catch nothing).
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": [25.0, 24.0, 26.0]})
    new = run_records("new", {"noise_15": [32.0, 31.0, 33.0]}, {"noise_15": [25.0, 24.0, 26.0]})
    for record in old:
        record["channel"] = "rgb"
    for record in new:
        record["channel"] = "y"
    with pytest.raises(DataError, match="channel rgb against y.*--y-channel"):
        paired_deltas(old, new, old_model="old", new_model="new")
    for record in new:
        del record["channel"]  # a run that predates the field is not judged by it
    assert paired_deltas(old, new, old_model="old", new_model="new")[0].delta == 1.0


def test_runs_without_the_identity_baseline_are_checked_by_their_inputs_scores():
    # Without --baseline identity nothing was checked: runs at another --max-side or on other
    # degradations were paired silently. Every per-image record now holds its input's PSNR.
    def without_identity(model, scores, inputs):
        records = [r for r in run_records(model, scores, inputs) if r["model"] != "identity"]
        for r in records:
            if "image" in r:
                r["input_psnr"] = inputs[r["kind"]][int(r["image"][1:])]
        return records

    old = without_identity(
        "old", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": [25.0, 24.0, 26.0]}
    )
    new = without_identity("new", {"noise_15": [36.0, 35.0, 37.0]}, {"noise_15": [30.0, 29, 31]})
    with pytest.raises(DataError, match="degraded p0"):
        paired_deltas(old, new, old_model="old", new_model="new")
    same = without_identity("new", {"noise_15": [31.5, 30.0, 32.0]}, {"noise_15": [25.0, 24, 26]})
    (delta,) = paired_deltas(old, same, old_model="old", new_model="new")
    assert delta.delta == pytest.approx(0.5 / 3)
    # A run from before input_psnr, with the identity baseline, checks against a newer one.
    older = run_records("old", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": [25.0, 24.5, 26.0]})
    with pytest.raises(DataError, match="degraded p1"):
        paired_deltas(older, same, old_model="old", new_model="new")


def test_a_score_json_could_not_hold_is_refused_in_one_line():
    # JSON has no infinity: an exact match is written as null, and compare raised TypeError.
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0]}, INPUTS)
    new = run_records("new", {"noise_15": [31.0, 30.0, 32.0]}, INPUTS)
    next(r for r in new if r["model"] == "new" and r.get("image") == "p2")["psnr"] = None
    with pytest.raises(DataError, match=r"'new' has no finite PSNR for p2 \(noise_15\)"):
        paired_deltas(old, new, old_model="old", new_model="new")


def test_missing_pairs_and_missing_per_image_are_refused():
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0], "L+H": [1.0, 2.0, 3.0]}, INPUTS)
    new = run_records("new", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": INPUTS["noise_15"]})
    with pytest.raises(DataError, match="different pairs"):
        paired_deltas(old, new, old_model="old", new_model="new")
    means_only = [r for r in new if "image" not in r]
    with pytest.raises(DataError, match="--per-image"):
        paired_deltas(old, means_only, old_model="old", new_model="new")


def test_pick_model_needs_a_name_when_a_run_holds_several():
    two = run_records("a", {"noise_15": [1.0]}, {}) + run_records("b", {"noise_15": [1.0]}, {})
    with pytest.raises(UsageError, match="2 models"):
        pick_model(two, None, "x.json")
    assert pick_model(two, "b", "x.json") == "b"
    with pytest.raises(UsageError, match="no model 'c'"):
        pick_model(two, "c", "x.json")
    assert pick_model(run_records("a", {"noise_15": [1.0]}, INPUTS), None, "y.json") == "a"


def test_script_prints_the_table_and_exits_on_the_rule(tmp_path, capsys):
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0], "L+H": [17.0, 18.0, 16.0]}, INPUTS)
    new = run_records("new", {"noise_15": [30.0, 30.0, 32.0], "L+H": [18, 19, 17]}, INPUTS)
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    main = load_script("compare_bench").main
    assert main([str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    out = capsys.readouterr().out
    assert "behind: noise_15 -0.333" in out and "not met" in out
    assert main([str(tmp_path / "new.json"), str(tmp_path / "new.json"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["mean_delta"] == 0 and data["every_kind"] and not data["release_rule"]
    assert main([str(tmp_path / "old.json"), str(tmp_path / "old.json"), "--old-model", "x"]) == 2
    assert "no model 'x'" in capsys.readouterr().err
    # Which photos a kind's mean rests on: each one's difference, worst first.
    main([str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--per-image"])
    out = capsys.readouterr().out.splitlines()
    (line,) = [ln for ln in out if ln.startswith("noise_15") and "(worst:" in ln]
    assert line.split()[1:4] == ["-1.00", "+0.00", "+0.00"] and "(worst: p0;" in line


def test_script_calls_unreadable_input_bad_input_not_a_regression(tmp_path, capsys):
    # Exit 1 means "the release rule is not met": a missing or foreign file exited 1 too, or
    # with a traceback for records that were not bench records.
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0]}, INPUTS)
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "foreign.json").write_text(json.dumps([1, {"psnr": 2}]))
    main = load_script("compare_bench").main
    for new, said in (("absent.json", "cannot read"), ("foreign.json", "not a bench --json")):
        assert main([str(tmp_path / "old.json"), str(tmp_path / new)]) == 2
        assert said in capsys.readouterr().err


def test_shared_kinds_compares_a_few_kinds_against_a_whole_table(tmp_path, capsys):
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0], "L+H": [17.0, 18.0, 16.0]}, INPUTS)
    few = run_records("new", {"L+H": [18.0, 19.0, 17.0]}, {"L+H": INPUTS["L+H"]})
    (deltas,) = paired_deltas(old, few, old_model="old", new_model="new", shared_kinds=True)
    assert deltas.kind == "L+H" and deltas.delta == pytest.approx(1.0)
    other_photos = run_records("new", {"L+H": [18.0, 19.0]}, {"L+H": INPUTS["L+H"][:2]})
    with pytest.raises(DataError, match="different pairs"):  # a kind still needs every photo
        paired_deltas(old, other_photos, old_model="old", new_model="new", shared_kinds=True)
    none = run_records("new", {"blur": [1.0, 2.0, 3.0]}, {})
    with pytest.raises(DataError, match="no kind in common"):
        paired_deltas(old, none, old_model="old", new_model="new", shared_kinds=True)

    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "few.json").write_text(json.dumps(few))
    main = load_script("compare_bench").main
    assert main([str(tmp_path / "old.json"), str(tmp_path / "few.json")]) == 2  # not by default
    assert "different pairs" in capsys.readouterr().err
    # Ahead on every kind it scored, but a rule about every kind cannot pass on a few.
    assert main([str(tmp_path / "old.json"), str(tmp_path / "few.json"), "--shared-kinds"]) == 1
    out = capsys.readouterr().out
    assert "L+H" in out and "not judged (left out: noise_15)" in out
    assert main([str(tmp_path / "old.json"), str(tmp_path / "few.json"), "--shared-kinds",
                 "--json"]) == 1  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["release_rule"] is None and data["left_out"] == ["noise_15"]


@pytest.mark.skipif(sys.platform == "win32", reason="a shell pipeline")
def test_script_piped_into_a_reader_that_quits_prints_no_traceback(tmp_path):
    old = run_records("old", {"noise_15": [31.0, 30.0, 32.0]}, {"noise_15": INPUTS["noise_15"]})
    (tmp_path / "old.json").write_text(json.dumps(old))
    script = BENCHMARKS / "compare_bench.py"
    result = subprocess.run(
        f'"{sys.executable}" "{script}" old.json old.json | true',
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
