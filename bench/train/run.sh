#!/usr/bin/env bash
# Training throughput: tureen vs open_clip on the same 19.3M-param ConvNeXt CLIP
# (convnext_atto tower at 64 px, text width 256 x 4 layers, context 32), random
# tensors, batch 64, float32, 2 threads, 10 timed steps after 3 warmup steps, in the
# same run, alternating tools; tureen with native numerics (libtorch's kernel choices, as
# open_clip) and with portable ones (the default of train stages: the same bytes on any
# x86-64 CPU). Usage: bench/train/run.sh [BATCH] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BATCH=${1:-64}
ROUNDS=${2:-2}
PY=.venv/bin/python
OC=${OC_TRAIN_BENCH:-/work/shared/bench/oc_train_bench.py}
[ -x "$PY" ] || { echo "missing $PY: run scripts/setup-venv.sh" >&2; exit 1; }
[ -f "$OC" ] || { echo "missing $OC (set OC_TRAIN_BENCH)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p tureen-torch --example train_bench
BIN="$CARGO_TARGET_DIR/release/examples/train_bench"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

# Throughput on a shared machine is only comparable at similar load: report it.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
oc=(); tu=(); tp=()
sps() { awk '/samples\/s/ {print $NF}'; }
for r in $(seq "$ROUNDS"); do
  oc+=("$("$PY" "$OC" "$BATCH" | sps)")
  tu+=("$("$BIN" "$BATCH" 2 10 convnext_atto_64 fp32 cpu native | sps)")
  tp+=("$("$BIN" "$BATCH" 2 10 convnext_atto_64 fp32 cpu portable | sps)")
done
best() { printf '%s\n' "$@" | sort -g | tail -1; }
OCB=$(best "${oc[@]}"); TUB=$(best "${tu[@]}"); TPB=$(best "${tp[@]}")
printf '\n| tool | batch | samples/s (best of %s) | all runs |\n|---|---|---|---|\n' "$ROUNDS"
printf '| open_clip (oc_train_bench.py) | %s | %s | %s |\n' "$BATCH" "$OCB" "${oc[*]}"
printf '| tureen (train_bench), numerics: native | %s | %s | %s |\n' "$BATCH" "$TUB" "${tu[*]}"
printf '| tureen (train_bench), numerics: portable | %s | %s | %s |\n' "$BATCH" "$TPB" "${tp[*]}"
awk -v a="$TUB" -v b="$OCB" 'BEGIN { printf "\nratio tureen native / open_clip: %.2fx\n", a / b }'
awk -v a="$TPB" -v b="$TUB" 'BEGIN { printf "ratio tureen portable / native: %.2fx\n", a / b }'
printf 'load average (1/5/15 min): %s before, %s after\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
