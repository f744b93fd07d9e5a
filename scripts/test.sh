#!/usr/bin/env bash
# Run every test tureen has: unit tests of each crate and the end-to-end tests in tests/
# that drive the `tureen` binary. Long or GPU-only checks stay behind explicit flags
# (see README).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

scripts/setup.sh
# The Slurm tests run against a real two-node cluster on this host (Debian's slurmctld,
# slurmd and munge); scripts/slurm/up.sh installs and starts it, its env file exports
# TUREEN_TEST_SLURM_CONF for the tests, and it is stopped again on exit.
scripts/slurm/up.sh
trap 'scripts/slurm/down.sh' EXIT
. "${TUREEN_SLURM_DIR:-/tmp/tureen-slurm}/env"
cargo test --release --locked --workspace --no-fail-fast
