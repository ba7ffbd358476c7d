"""Compare two checkpoints kind by kind from two `anyrestore bench --per-image --json` runs.

Prints, per kind, the old and new mean PSNR, their difference with the standard error of the
per-image differences, and on how many photos the new one is ahead; then whether the release
rule of docs/model-card.md holds (mean up, no kind more than 0.1 dB behind). Exits 0 when it
holds, 1 when not (or when ``--shared-kinds`` left kinds out, so it was not judged), 2 on bad
input.

    anyrestore bench --suite synthetic --images corpus/val-photos --baseline identity \
        --weights old.safetensors --per-image --json > old.json
    anyrestore bench --suite synthetic --images corpus/val-photos --baseline identity \
        --weights new.safetensors --per-image --json > new.json
    python benchmarks/compare_bench.py old.json new.json
    # a quick look at the kinds a candidate might lose, against the whole old table:
    anyrestore bench ... --weights new.safetensors --kinds H+S,L+S --per-image --json > few.json
    python benchmarks/compare_bench.py old.json few.json --shared-kinds
    # which photos a kind's mean rests on: each one's difference, worst first
    python benchmarks/compare_bench.py old.json new.json --per-image
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from anyrestore.bench.compare import RELEASE_TOLERANCE, paired_deltas, pick_model, verdict
from anyrestore.errors import AnyRestoreError, InputError


def _load(path: Path) -> list[dict]:
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and "model" in r and "kind" in r for r in records
    ):
        raise InputError(f"{path} is not a bench --json list of records")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="bench JSON of the reference (the shipped one)")
    parser.add_argument("new", type=Path, help="bench JSON of the candidate")
    parser.add_argument("--old-model", help="which model of OLD (when it holds several)")
    parser.add_argument("--new-model", help="which model of NEW (when it holds several)")
    parser.add_argument("--tolerance", type=float, default=RELEASE_TOLERANCE)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--per-image",
        action="store_true",
        help="also list each kind's per-photo differences, worst first, naming the worst",
    )
    parser.add_argument(
        "--shared-kinds",
        action="store_true",
        help="compare only the kinds both runs scored (the release rule is then not judged)",
    )
    args = parser.parse_args(argv)
    try:
        old, new = _load(args.old), _load(args.new)
        old_model = pick_model(old, args.old_model, str(args.old))
        new_model = pick_model(new, args.new_model, str(args.new))
        deltas = paired_deltas(
            old, new, old_model=old_model, new_model=new_model, shared_kinds=args.shared_kinds
        )
    except AnyRestoreError as exc:
        print(f"compare_bench: {exc}", file=sys.stderr)
        return 2
    result = verdict(deltas, args.tolerance)
    scored = {r["kind"] for r in (*old, *new) if "image" in r}
    left_out = sorted(scored - {d.kind for d in deltas})
    release = result.release and not left_out
    if args.json:
        out = {
            "old": old_model,
            "new": new_model,
            "kinds": [asdict(d) for d in deltas],
            "mean_delta": result.mean_delta,
            "release_rule": None if left_out else result.release,
            "left_out": left_out,
            "every_kind": result.every_kind,
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"old: {old_model}   new: {new_model}   (PSNR dB; +- one standard error)")
        print(f"{'kind':10} {'old':>7} {'new':>7} {'new-old':>8} {'+-':>6} {'ahead':>7}")
        for d in deltas:
            se = f"{d.stderr:6.3f}" if d.stderr is not None else f"{'-':>6}"
            print(
                f"{d.kind:10} {d.old:7.2f} {d.new:7.2f} {d.delta:+8.3f} {se} "
                f"{d.ahead:>3}/{d.images:<3}"
            )
        print(f"{'mean':10} {'':7} {'':7} {result.mean_delta:+8.3f}")
        if args.per_image:
            for d in deltas:
                ranked = sorted(d.per_image.items(), key=lambda item: item[1])
                spread = " ".join(f"{v:+.2f}" for _, v in ranked)
                print(f"{d.kind:10} {spread}   (worst: {ranked[0][0]}; best: {ranked[-1][0]})")
        behind = ", ".join(f"{d.kind} {d.delta:+.3f}" for d in deltas if d.delta < 0) or "none"
        print(f"behind: {behind}")
        rule = "met" if result.release else "not met"
        if left_out:
            rule = f"not judged (left out: {', '.join(left_out)})"
        print(f"release rule (mean up, no kind more than {args.tolerance} dB behind): {rule}")
    return 0 if release else 1


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):  # piped into `head`: stop quietly when the reader goes away
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
