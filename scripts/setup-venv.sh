#!/usr/bin/env bash
# Provide the Python side tureen builds and tests against: libtorch (for tch) and the
# open_clip/safetensors references used by parity tests and benchmarks.
#
# The venv lives in a per-user cache keyed by the torch version, so a fresh clone does
# not download 4.6 GB again; `.venv` in the repository is a symlink to it.
set -euo pipefail

TORCH_VERSION=2.11.0
OPEN_CLIP_VERSION=3.3.0
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TUREEN_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tureen}
venv=$cache/venv-torch-$TORCH_VERSION
stamp=$venv/.tureen-complete

if [ ! -f "$stamp" ]; then
    echo "setup-venv: creating $venv (torch==$TORCH_VERSION, one-time)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet \
        "torch==$TORCH_VERSION" \
        "open_clip_torch==$OPEN_CLIP_VERSION" \
        safetensors numpy pillow
    # Only a finished install is trusted; an interrupted one is redone next time.
    touch "$stamp"
fi

# What `python -m open_clip_train.main` imports beyond open_clip (the `open_clip` stage
# kind and its tests run it): webdataset in open_clip's pinned range, braceexpand, pandas.
# A second stamp holding this list makes an existing cached venv get them too (and get
# them again whenever the list changes), without redoing the torch install.
TRAIN_PACKAGES="webdataset<=0.2.86 braceexpand pandas"
train_stamp=$venv/.tureen-open-clip-train
if [ "$(cat "$train_stamp" 2>/dev/null)" != "$TRAIN_PACKAGES" ] \
    || ! "$venv/bin/python" -c 'import webdataset, braceexpand, pandas' 2>/dev/null; then
    echo "setup-venv: installing $TRAIN_PACKAGES into $venv" >&2
    # shellcheck disable=SC2086 # one word per requirement
    "$venv/bin/python" -m pip install --quiet $TRAIN_PACKAGES
    echo "$TRAIN_PACKAGES" > "$train_stamp"
fi

# CUDA headers torch's wheels lack, for the NCCL process group of stages/torch's build
# (nvidia-cuda-crt: crt/host_config.h, nvidia-cuda-cccl: nv/target). Also into a venv
# cached before they were needed. Without them tureen-torch builds with gloo only.
cuda_headers=("nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85")
if ! "$venv/bin/python" -m pip show --quiet nvidia-cuda-crt nvidia-cuda-cccl >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet "${cuda_headers[@]}"
fi

# A stable path to the torch package for tch's build (`LIBTORCH` in .cargo/config.toml),
# whatever Python minor version the venv has.
torch_dir=$("$venv/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" "$venv/libtorch"
ln -sfn "$venv" "$repo/.venv"
"$repo/.venv/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__"
