#!/usr/bin/env bash
# Train a chain of recipes, each stage starting from the previous stage's exported weights:
# how a release that was trained in stages is reproduced with one command.
#
#   bash scripts/train_chain.sh CHAIN DATA_ROOT [RUNS]
#
# CHAIN lists one stage per line: a recipe (relative to the chain file), the step to stop it
# at (0: the recipe's own step count) and, optionally, KEY=VALUE overrides of that stage's
# recipe (each one word, as --set takes it); `#` starts a comment. DATA_ROOT becomes every stage's
# data.root. RUNS (default runs/<chain name>) gets a run folder and an export per stage,
# RUNS/<recipe name>.safetensors (fp32, so the next stage starts from exactly what this one
# learnt); the last stage's export is the chain's result. Run it again after an interruption:
# finished stages are skipped, the interrupted one resumes from its last.pt. Two stages may not
# share a recipe file name (their run folders would be one). Extra arguments
# for every stage go in TRAIN_ARGS (e.g. "--set train.threads=4"); PYTHON picks the
# interpreter (default python).
set -euo pipefail

chain=${1:?usage: train_chain.sh CHAIN DATA_ROOT [RUNS]}
data=${2:?usage: train_chain.sh CHAIN DATA_ROOT [RUNS]}
[ -f "$chain" ] || { echo "train_chain.sh: no such chain file: $chain" >&2; exit 2; }
[ -d "$data" ] || { echo "train_chain.sh: no such folder: $data" >&2; exit 2; }
name=$(basename "$chain"); name=${name%.*}
runs=${3:-runs/$name}
here=$(dirname "$chain")
python=${PYTHON:-python}
read -r -a extra <<< "${TRAIN_ARGS:-}"

# Read and check every stage before training any.
configs=() stops=() stems=() overrides=()
while IFS= read -r line || [ -n "$line" ]; do
    read -r config stop sets <<< "${line%%#*}"
    [ -n "${config:-}" ] || continue
    n=$((${#configs[@]} + 1))
    [ -f "$here/$config" ] || { echo "train_chain.sh: stage $n: no such recipe: $here/$config" >&2; exit 2; }
    [[ "${stop:-0}" =~ ^[0-9]+$ ]] || { echo "train_chain.sh: stage $n: stop step is not a number: $stop" >&2; exit 2; }
    read -r -a words <<< "${sets:-}"  # split without glob expansion: values hold [ ]
    for set in "${words[@]}"; do
        [[ "$set" == ?*=?* ]] || { echo "train_chain.sh: stage $n: not a KEY=VALUE override: $set" >&2; exit 2; }
    done
    stem=${config##*/}; stem=${stem%.toml}
    for other in "${stems[@]}"; do
        # Run folders and exports are named after the recipe file: two stages may not share one.
        [ "$other" != "$stem" ] || { echo "train_chain.sh: stage $n: a recipe named $stem.toml is already a stage: rename one" >&2; exit 2; }
    done
    configs+=("$config") stops+=("${stop:-0}") stems+=("$stem") overrides+=("${sets:-}")
done < "$chain"
[ "${#configs[@]}" -gt 0 ] || { echo "train_chain.sh: no stages in $chain" >&2; exit 2; }

mkdir -p "$runs"
previous=""
for i in "${!configs[@]}"; do
    config=${configs[$i]} stop=${stops[$i]} stem=${stems[$i]}
    run="$runs/$stem"
    export="$runs/$stem.safetensors"
    if [ ! -f "$export" ]; then
        args=(-c "$here/$config" --no-progress --set "out=$run" --set "data.root=$data")
        [ -n "$previous" ] && args+=(--set "train.init_from=$previous")
        [ "$stop" -gt 0 ] && args+=(--stop-at "$stop")
        read -r -a words <<< "${overrides[$i]}"
        for set in "${words[@]}"; do args+=(--set "$set"); done
        [ -f "$run/last.pt" ] && args+=(--resume "$run/last.pt")
        echo "== stage $((i + 1)): $config" >&2
        "$python" -m anyrestore train "${args[@]}" "${extra[@]}" </dev/null
        "$python" -m anyrestore train export "$run/last.pt" -o "$export" --dtype fp32 </dev/null
    fi
    previous=$export
done
echo "$previous"
