#!/usr/bin/env bash
# Data-parallel training on the CPU (gloo) and gradient checkpointing, measured with
# stages/torch/examples/dist_bench.rs in one run:
#
# 1. Samples/s of 2 ranks x 1 thread against 1 process x 2 threads at the same global
#    batch (default: 64, the 19.3M-param convnext_atto_64 CLIP, fp32), and each rank's
#    share of the step spent in collectives (all-gather of features, reduce-scatter of
#    their gradients, bucketed all-reduce of the parameter gradients; a rank also waits
#    there for a slower one). Target: under 10%.
# 2. Peak memory and step time with and without gradient checkpointing where
#    activations dominate: convnext_tiny's CLIP at 128 px, batch 16, 2 threads.
#
# Usage: bench/dist/run.sh [GLOBAL_BATCH] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BATCH=${1:-64}
STEPS=${2:-5}
ROUNDS=${3:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p tureen-torch --example dist_bench
BIN="$CARGO_TARGET_DIR/release/examples/dist_bench"
field() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# 1. Two ranks against one process, alternating, best of ROUNDS.
one=(); two=(); share0=(); share1=()
for r in $(seq "$ROUNDS"); do
  one+=("$("$BIN" "$BATCH" 2 "$STEPS" convnext_atto_64 | field samples/s)")
  port=$(free_port); out=$(mktemp -d)
  for rank in 0 1; do
    RANK=$rank WORLD_SIZE=2 LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$BIN" "$BATCH" 1 "$STEPS" convnext_atto_64 > "$out/$rank" &
  done
  wait
  two+=("$(field samples/s < "$out/0")")
  for rank in 0 1; do
    s=$(awk '{ for (i = 1; i < NF; i++) { if ($i == "step_ms") t = $(i + 1); if ($i == "comm_ms") c = $(i + 1) } } END { printf "%.1f", 100 * c / t }' "$out/$rank")
    if [ "$rank" = 0 ]; then share0+=("$s"); else share1+=("$s"); fi
  done
  rm -rf "$out"
done
best() { printf '%s\n' "$@" | sort -g | tail -1; }
ONE=$(best "${one[@]}"); TWO=$(best "${two[@]}")
printf '\n| setup (global batch %s, convnext_atto_64, fp32) | samples/s (best of %s) | all runs | %% of step in collectives (rank 0 / rank 1, per run) |\n|---|---|---|---|\n' "$BATCH" "$ROUNDS"
printf '| 1 process x 2 threads | %s | %s | - |\n' "$ONE" "${one[*]}"
printf '| 2 ranks x 1 thread (gloo) | %s | %s | %s / %s |\n' "$TWO" "${two[*]}" "${share0[*]}" "${share1[*]}"
awk -v a="$TWO" -v b="$ONE" 'BEGIN { printf "\nratio 2 ranks / 1 process: %.2fx\n", a / b }'

# 2. Gradient checkpointing where activations dominate.
CK_BATCH=16; CK_STEPS=2
plain=$("$BIN" "$CK_BATCH" 2 "$CK_STEPS" convnext_tiny 128)
ckpt=$("$BIN" "$CK_BATCH" 2 "$CK_STEPS" convnext_tiny 128 ckpt)
row() {
  local name=$1 line=$2
  printf '| %s | %s | %s | %s |\n' "$name" "$(field step_ms <<< "$line")" \
    "$(awk -v k="$(field peak_rss_kb <<< "$line")" 'BEGIN { printf "%.0f", k / 1024 }')" \
    "$(awk -v p="$(field peak_rss_kb <<< "$line")" -v b="$(field rss_before_kb <<< "$line")" 'BEGIN { printf "%.0f", (p - b) / 1024 }')"
}
printf '\n| convnext_tiny CLIP at 128 px, batch %s, 2 threads | step ms | peak RSS MiB | peak above the model (MiB) |\n|---|---|---|---|\n' "$CK_BATCH"
row "activations kept" "$plain"
row "grad_checkpointing: true" "$ckpt"
awk -v a="$(field step_ms <<< "$ckpt")" -v b="$(field step_ms <<< "$plain")" \
    -v pa="$(field peak_rss_kb <<< "$ckpt")" -v pb="$(field peak_rss_kb <<< "$plain")" \
    -v ba="$(field rss_before_kb <<< "$ckpt")" -v bb="$(field rss_before_kb <<< "$plain")" \
    'BEGIN { printf "\ncheckpointing / kept: step time %.2fx, peak RSS %.2fx, peak above the model %.2fx\n", a / b, pa / pb, (pa - ba) / (pb - bb) }'
printf 'load average (1/5/15 min): %s before, %s after\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
