#!/usr/bin/env bash
# Data loader throughput (decode + recipe augmentation + tokenize + batch) against the
# model's training step throughput, on this machine.
#
#   bench/data/run.sh            # 64 px and 256 px, 1 and 2 workers
#
# The loader must outrun the model step, or training waits on data. The model figure
# comes from bench/train (same machine, same run) when it exists, else the open_clip
# baseline of ../shared/README.md (82 samples/s, convnext_atto 64 px, batch 64, fp32).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --bin tureen
TUREEN="$CARGO_TARGET_DIR/release/tureen"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$TUREEN" -q data synth --out "$WORK/d64" --shards 4 --per-shard 256 --size 64 --seed 0 --zeroshot-per-class 1 --retrieval 1
"$TUREEN" -q data synth --out "$WORK/d256" --shards 2 --per-shard 128 --size 256 --seed 0 --zeroshot-per-class 1 --retrieval 1

printf '\n| images | workers | loader samples/s |\n|---|---|---|\n'
loader64=""
for size in 64 256; do
  shards="train/{000000..000003}.tar"
  [ "$size" = 256 ] && shards="train/{000000..000001}.tar"
  batches=100
  [ "$size" = 256 ] && batches=20
  for workers in 1 2; do
    line=$("$TUREEN" data bench --data "$shards" --base-dir "$WORK/d$size" --size "$size" \
      --batch-size 64 --workers "$workers" --batches "$batches" --context-length 32)
    rate=$(sed -E 's/.*= ([0-9.]+) samples\/s.*/\1/' <<<"$line")
    printf '| %s px | %s | %s |\n' "$size" "$workers" "$rate"
    [ "$size" = 64 ] && [ "$workers" = 2 ] && loader64=$rate
  done
done

# The model step: tureen's and open_clip's training throughput from bench/train (same
# machine, same run), else the open_clip figure measured by the founders.
model="" oc=""
if [ -x bench/train/run.sh ] && [ -z "${SKIP_TRAIN_BENCH:-}" ]; then
  echo
  echo "model step (bench/train/run.sh, random tensors, no loader):"
  bench/train/run.sh 64 1 | tee "$WORK/train.txt"
  model=$(awk -F'|' '/tureen \(train_bench\)/ {gsub(/ /, "", $4); print $4}' "$WORK/train.txt")
  oc=$(awk -F'|' '/open_clip \(oc_train_bench.py\)/ {gsub(/ /, "", $4); print $4}' "$WORK/train.txt")
fi
oc=${oc:-82}
printf '\n| convnext_atto CLIP, 64 px, batch 64, fp32, 2 cores | samples/s |\n|---|---|\n'
printf '| data loader alone (decode + RRC + erasing + tokenize, 2 workers) | %s |\n' "$loader64"
[ -n "$model" ] && printf '| tureen training step (random tensors) | %s |\n' "$model"
printf '| open_clip training step%s | %s |\n' "$([ -z "$model" ] && echo ' (shared/README.md figure)')" "$oc"
awk -v l="$loader64" -v m="${model:-$oc}" 'BEGIN { printf "\nloader / model step: %.1fx (target: > 1)\n", l / m }'
