#!/usr/bin/env bash
# Run every test tureen has: unit tests of each crate and the end-to-end tests in tests/
# that drive the `tureen` binary. Long or GPU-only checks stay behind explicit flags
# (see README).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

scripts/setup.sh
cargo test --release --locked --workspace
