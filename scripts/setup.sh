#!/usr/bin/env bash
# Set up everything tureen needs on a fresh Debian machine with a Rust toolchain:
# Python venv with torch==2.11.0 (cached per user), then a release build of `tureen`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    # Debian splits venv support into its own package.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null
    else
        echo "setup: python3 with the venv module is required (apt-get install python3-venv)" >&2
        exit 1
    fi
fi

# Headless Chromium renders `tureen report` pages in tests/report.rs (skipped without it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# gloo's headers: the data-parallel layer (stages/torch/src/dist) includes libtorch's
# ProcessGroupGloo.hpp, which includes them, and torch's wheel ships none.
if [ ! -f /usr/include/gloo/config.h ] && [ -z "${GLOO_INCLUDE:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq libgloo-dev >/dev/null
    else
        echo "setup: gloo's headers are required (apt-get install libgloo-dev, or set GLOO_INCLUDE)" >&2
        exit 1
    fi
fi

scripts/setup-venv.sh
cargo build --release --locked --bin tureen --bin tureen-torch
