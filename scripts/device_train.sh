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
# Then on the device machine (device tool `run`, carry [".corpus", ".whl"], timeout_s 600):
#   bash scripts/device_train.sh run configs/release_anyir_t_v2.toml 7 --set train.batch_size=32
# Back under $OUT: weights.safetensors (EMA, fp16), metrics.jsonl, train.log and, unless
# BENCH=0, bench-new.json and bench-shipped.json: the held-out synthetic bench of the new
# weights and of the recipe's train.init_from weights, side by side.
#
# `run` trains until the recipe's step count or for MINUTES, whichever comes first: at the time
# limit the trainer gets SIGTERM, finishes its step and writes its checkpoint, which is then
# exported. Environment: CORPUS (archive, default .corpus/corpus.tar), WHEELS (default .whl),
# OUT (default /tmp/device-out), WORK (scratch, default /tmp/device-train), BENCH (1 or 0),
# BENCH_SIDE (longest side for the bench, default 256).
set -euo pipefail

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

prepare() {
    local archive=${1:?prepare needs the corpus archive (scripts/build_corpus.py --archive)}
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")" .corpus .whl
    for path in /.corpus/ /.whl/; do
        grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
    done
    cp "$archive" .corpus/corpus.tar
    local version
    version=$(python3 -c 'from importlib.metadata import version; print(version("PyWavelets"))')
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
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
    tar -xf "$corpus" -C "$work"  # the archive holds corpus/train, corpus/val
    local data="$work/corpus" run_dir
    run_dir="$work/run-$(basename "$recipe" .toml)"
    # The time limit is SIGTERM: the trainer ends its step and writes a resume checkpoint.
    local status=0
    timeout -s TERM -k 120 "${minutes}m" "$python" -m anyrestore train -c "$recipe" \
        --out "$run_dir" --set "data.root=$data/train" --no-progress "$@" \
        >"$out/train.log" 2>&1 || status=$?
    tail -n 5 "$out/train.log"
    if [[ $status -ne 0 && $status -ne 124 ]]; then
        echo "device_train: training failed (exit $status); see train.log" >&2
        exit "$status"
    fi
    cp "$run_dir/metrics.jsonl" "$out/"
    "$python" -m anyrestore train export "$run_dir" -o "$out/weights.safetensors"
    if [[ ${BENCH:-1} == 1 ]]; then
        local side=${BENCH_SIDE:-256} shipped
        shipped=$("$python" -c 'import sys; from anyrestore.training.config import load_config
print(load_config(sys.argv[1]).train.init_from)' "$recipe")
        for name in new shipped; do
            local weights="$out/weights.safetensors"
            [[ $name == shipped ]] && weights=$shipped
            [[ -n $weights ]] || continue
            "$python" -m anyrestore bench --suite synthetic --images "$data/val" \
                --weights "$weights" --baseline identity --max-side "$side" --json \
                >"$out/bench-$name.json"
        done
    fi
    ls -l "$out"
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) usage ;;
esac
