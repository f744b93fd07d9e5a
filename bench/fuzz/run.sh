#!/usr/bin/env bash
# Mutation fuzzing of tureen's parsers: builds fuzz/ (its own workspace, never part of
# the project's build or CI; stable Rust, overflow checks and debug assertions on) and
# runs each target for MINUTES minutes. Prints inputs tried, accepted, crashes and slow
# inputs per target; crashers are saved under fuzz/crashes/TARGET/ (turn each into a
# regression test in the normal suite). Usage: bench/fuzz/run.sh [MINUTES] [TARGET...]
# Targets: safetensors, pipeline, mergekit-config, torch (whole torch.save files) and
# torch-pickle (data.pkl alone, zipped again with the storages it declares); the torch
# seeds in fuzz/seeds/torch/ come from bench/fuzz/torch_seeds.py (the venv's python).
set -euo pipefail
cd "$(dirname "$0")/../.."
MINUTES=${1:-5}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(safetensors pipeline mergekit-config torch torch-pickle)
(cd fuzz && cargo build --release -q)
BIN=fuzz/target/release/tureen-fuzz
SECS=$((MINUTES * 60))
status=0
for t in "${TARGETS[@]}"; do
  # A hang inside one input would stop the in-process loop: `timeout` reports it.
  rc=0
  timeout $((SECS + 120)) "$BIN" "$t" "$SECS" "${FUZZ_SEED:-1}" || rc=$?
  if [ $rc -eq 124 ]; then echo "$t: HUNG (no result $((SECS + 120)) s after start)"; fi
  if [ $rc -ne 0 ]; then status=1; fi
done
exit $status
