#!/usr/bin/env bash
# Train a release model on a lent GPU for a fixed time and bring its weights back.
#
# A lent GPU machine starts bare, takes at most 64 MiB of files with it and returns files of at
# most 16 MiB, so the run starts from what the repository already holds (a recipe and its
# train.init_from weights), carries the photo corpus as its archive and PyWavelets as a wheel
# (the machine's Python has everything else), and returns fp16 inference weights.
#
# Here, once per session (copies the archive to .corpus/, the wheel to .whl/, both ignored):
#   bash scripts/device_train.sh prepare /path/to/corpus.tar
# Before each call, keep the travelling tree small: `slim RECIPE...` takes the embedded
# checkpoints no recipe starts from (train.init_from) or distils from (distill.teacher) out
# of the index and ignores them; `unslim` puts them back afterwards (a pre-commit hook refuses
# commits between; slim refuses an index with other staged changes).
#   bash scripts/device_train.sh slim configs/release_anyir_t_v8.toml configs/release_clusir_t_v7.toml
# Then on the device machine (device tool `run`, carry [".corpus", ".whl"], timeout_s 600):
#   bash scripts/device_train.sh run configs/release_anyir_t_v2.toml 7 --set train.batch_size=32
# Back under $OUT: weights.safetensors (EMA, fp16), metrics.jsonl, train.log and, unless
# BENCH=0, bench-new.json and bench-shipped.json: the held-out synthetic bench of the new
# weights and of the recipe's train.init_from weights, side by side.
#
# `run` trains until the recipe's step count or for MINUTES, whichever comes first: at the time
# limit the trainer gets SIGTERM, finishes its step and writes its checkpoint, which is then
# exported. With STEPS=fit it first trains for CAL_SECONDS (default 60) to measure the step
# rate and then sets train.steps so that the whole cosine ends within MINUTES (the recipe's
# steps stay the ceiling); that first run is also a smoke test: if it fails, it is tried again
# with the degradations made in the loader workers, then also in fp32, and the run keeps the
# first settings that trained. Environment: CORPUS (archive, default .corpus/corpus.tar),
# WHEELS (default .whl), OUT (default /tmp/device-out), WORK (scratch, default
# /tmp/device-train), BENCH (1 or 0), BENCH_SIDE (longest side for the bench, default 256).
# Two recipes can share one GPU: run two of these at once with their own OUT and WORK.
set -euo pipefail

usage() {
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

EMBEDDED=anyrestore/weights/embedded

# This clone's own ignore list (not committed).
exclude_file() {
    git rev-parse --git-path info/exclude
}

# Add PATTERN to that list, once.
ignore() {
    local exclude
    exclude=$(exclude_file)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "$1" "$exclude" 2>/dev/null || echo "$1" >>"$exclude"
}

slim() {
    (($#)) || { echo "device_train: slim needs the recipes the call will run" >&2; exit 2; }
    if ! git diff --cached --quiet -- . ":(exclude)$EMBEDDED"; then
        echo "device_train: the index holds staged changes; commit or unstage them first" >&2
        exit 2
    fi
    # From the full set each time: `slim A` then `slim B` must keep what B starts from.
    unslim >/dev/null
    local keep path
    keep=$("${PYTHON:-python3}" - "$@" <<'PY'
import os, sys
from anyrestore.errors import AnyRestoreError
from anyrestore.training.config import load_config
from anyrestore.weights.resolve import resolve_weights
for recipe in sys.argv[1:]:
    config = load_config(recipe)
    for ref in (config.train.init_from, config.distill.teacher):
        if not ref:
            continue
        try:  # a weights name: the embedded file it stands for
            ref = resolve_weights(ref, offline=True)
        except AnyRestoreError:
            pass  # not here (yet): kept as written
        # as git names it: relative to this root, however the recipe wrote it
        print(os.path.relpath(os.path.abspath(ref)))
PY
)
    while IFS= read -r path; do
        [[ -n $path ]] || continue
        grep -qxF "$path" <<<"$keep" && continue
        git rm -q --cached -- "$path"
        ignore "/$path"
    done < <(git ls-files -- "$EMBEDDED")
    # A commit now would delete the slimmed weights from the repository: refused until unslim.
    local hook
    hook=$(git rev-parse --git-path hooks/pre-commit)
    if [[ ! -e $hook ]]; then
        mkdir -p "$(dirname "$hook")"
        printf '%s\n' '#!/bin/sh' "$SLIM_HOOK_LINE" \
            'echo "device_train: slimmed for a device call; run: bash scripts/device_train.sh unslim" >&2' \
            'exit 1' >"$hook"
        chmod +x "$hook"
    fi
    echo "device_train: tracked files now $(git ls-files -z | xargs -0 cat | wc -c) bytes"
}

SLIM_HOOK_LINE="# device_train.sh slim: removed by unslim"

unslim() {
    local exclude hook
    exclude=$(exclude_file)
    git reset -q HEAD -- "$EMBEDDED"
    [[ -f $exclude ]] && sed -i "\#^/$EMBEDDED/#d" "$exclude"
    hook=$(git rev-parse --git-path hooks/pre-commit)
    if [[ -f $hook ]] && grep -qxF "$SLIM_HOOK_LINE" "$hook"; then
        rm -f "$hook"
    fi
    git status --short -- "$EMBEDDED"
}

prepare() {
    local archive=${1:?prepare needs the corpus archive (scripts/build_corpus.py --archive)}
    mkdir -p .corpus .whl
    ignore /.corpus/
    ignore /.whl/
    cp "$archive" .corpus/corpus.tar
    local version
    local python=${PYTHON:-python3}
    version=$("$python" -c 'from importlib.metadata import version; print(version("PyWavelets"))')
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "PyWavelets==$version"
    du -ch .corpus .whl | tail -1
}

run() {
    local recipe=${1:?run needs a recipe} minutes=${2:?run needs the minutes to train}
    shift 2
    local corpus=${CORPUS:-.corpus/corpus.tar} wheels=${WHEELS:-.whl}
    local out=${OUT:-/tmp/device-out} work=${WORK:-/tmp/device-train}
    local python=${PYTHON:-python3}
    mkdir -p "$out" "$work"
    if compgen -G "$wheels/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$work/site" "$wheels"/*.whl
    fi
    export PYTHONPATH="$work/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    local data="$work/corpus" run_dir
    run_dir="$work/run-$(basename "$recipe" .toml)"
    # A warm machine keeps the last call's files: its run would refuse the folder, and photos
    # a rebuilt corpus moved to val would stay in train.
    rm -rf "$run_dir" "$data"
    tar -xf "$corpus" -C "$work"  # the archive holds corpus/train, corpus/val
    local seconds started=$SECONDS
    seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
    local -a settings=("$@")
    if [[ ${STEPS:-} == fit ]]; then
        fit "$recipe" "$data" "$seconds" "$@"
        settings=("${FIT_SETTINGS[@]}")
    fi
    # The time limit is SIGTERM: the trainer ends its step and writes a resume checkpoint.
    local status=0 left=$((seconds - (SECONDS - started)))
    ((left > 0)) || left=1  # `timeout 0` would mean no limit at all
    timeout -s TERM -k 120 "${left}s" "$python" -m anyrestore train -c "$recipe" \
        --out "$run_dir" --set "data.root=$data/train" --no-progress "${settings[@]}" \
        >"$out/train.log" 2>&1 || status=$?
    tail -n 5 "$out/train.log"
    if [[ $status -ne 0 && $status -ne 124 ]]; then
        echo "device_train: training failed (exit $status); see train.log" >&2
        exit "$status"
    fi
    if [[ ! -s $run_dir/metrics.jsonl ]]; then
        echo "device_train: the time limit came before the first logged step; nothing to" \
            "return (give it more minutes; see train.log)" >&2
        exit 1
    fi
    cp "$run_dir/metrics.jsonl" "$out/"
    "$python" -m anyrestore train export "$run_dir" -o "$out/weights.safetensors"
    if [[ ${BENCH:-1} == 1 ]]; then
        local side=${BENCH_SIDE:-256} shipped photos="$work/val-photos"
        # train.init_from may name shipped weights: bench --weights takes their file
        shipped=$("$python" -c 'import sys
from anyrestore.errors import AnyRestoreError
from anyrestore.training.config import load_config
from anyrestore.weights.resolve import resolve_weights
ref = load_config(sys.argv[1]).train.init_from
try:
    print(resolve_weights(ref, offline=True) if ref else "")
except AnyRestoreError as exc:  # trained from them, so unlikely; then no comparison
    print(f"device_train: no bench of {ref}: {exc}", file=sys.stderr)
    print("")' "$recipe")
        # one file a photo, as corpus/val-photos in the model card (val/ holds three scales)
        if compgen -G "$data/val/*__s100.*" >/dev/null; then
            rm -rf "$photos"
            mkdir -p "$photos"
            cp "$data"/val/*__s100.* "$photos"/
        else
            photos="$data/val"
        fi
        for name in new shipped; do
            local weights="$out/weights.safetensors"
            [[ $name == shipped ]] && weights=$shipped
            [[ -n $weights ]] || continue
            "$python" -m anyrestore bench --suite synthetic --images "$photos" \
                --weights "$weights" --baseline identity --max-side "$side" --per-image --json \
                >"$out/bench-$name.json"
        done
    fi
    ls -l "$out"
}

# Measure the recipe's step rate on this machine and set FIT_SETTINGS to the given settings plus
# the first fallback that trained and a train.steps that ends the cosine within SECONDS (counted
# from now, this measurement included). The last two logged windows give the rate: the first
# steps pay for warm-up (kernel selection, loader start). Settings too slow to log three
# windows in that time count as failed: the next fallback may be faster.
fit() {
    local recipe=$1 data=$2 seconds=$3
    shift 3
    local start=$SECONDS cal="$work/calibrate" status rate=""
    local -a fallbacks=("" "data.degrade_on_device=false" \
        "data.degrade_on_device=false train.precision=fp32")
    local extra setting
    for extra in "${fallbacks[@]}"; do
        local -a more=()
        for setting in $extra; do more+=(--set "$setting"); done
        rm -rf "$cal"
        status=0
        timeout -s TERM -k 60 "${CAL_SECONDS:-60}s" "$python" -m anyrestore train -c "$recipe" \
            --out "$cal" --set "data.root=$data/train" --no-progress "$@" "${more[@]}" \
            --set train.steps=1000000 --set log.every=5 --set log.val_every=0 \
            --set log.ckpt_every=0 >>"$out/calibrate.log" 2>&1 || status=$?
        rate=$("$python" - "$cal/metrics.jsonl" 2>/dev/null <<'PY' || true
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if '"samples_per_s"' in line]
if len(rows) >= 3:  # steps per second over the last two windows
    batch = rows[-1]["samples"] / rows[-1]["step"]
    print(sum(r["samples_per_s"] for r in rows[-2:]) / 2 / batch)
PY
)
        if [[ -n $rate ]]; then
            FIT_SETTINGS=("$@" "${more[@]}")
            break
        fi
        local why="failed (exit $status)"
        [[ $status == 124 ]] && why="too slow to measure (under 15 steps in ${CAL_SECONDS:-60} s)"
        echo "device_train: calibration with '${extra:-recipe settings}' $why;" \
            "see calibrate.log" >&2
    done
    [[ -n $rate ]] || { echo "device_train: no settings trained" >&2; exit 1; }
    # Left for the run: its start-up and final validation take RESERVE seconds (default 45).
    local left=$((seconds - (SECONDS - start) - ${RESERVE:-45}))
    local steps
    steps=$(fitted_steps "$rate" "$left" "$recipe" "${FIT_SETTINGS[@]}")
    echo "device_train: ${rate} steps/s, ${left}s left: train.steps <= ${steps}" \
        "${extra:+(with $extra)}" | tee -a "$out/calibrate.log"
    # Last, as --steps: the CLI's --steps outranks --set, and a repeated option takes the last.
    FIT_SETTINGS+=(--steps "$steps")
}

# RATE steps/s for LEFT seconds, at most the recipe's train.steps as the arguments set it
# (--set train.steps=N or --steps N).
fitted_steps() {
    "$python" - "$@" <<'PY'
import sys
from anyrestore.training.config import load_config
rate, left, recipe, args = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
sets = []
for flag, value in zip(args, args[1:]):
    if flag == "--set":
        sets.append(value)
    elif flag == "--steps":
        sets.append(f"train.steps={value}")
fit = max(1, int(rate * left))
ceiling = load_config(recipe, overrides=sets).train.steps  # 0: the recipe counts epochs
print(min(fit, ceiling) if ceiling else fit)
PY
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    slim) shift; slim "$@" ;;
    unslim) unslim ;;
    run) shift; run "$@" ;;
    *) usage ;;
esac
