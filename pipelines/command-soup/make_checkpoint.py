#!/usr/bin/env python3
"""Writes a tiny deterministic model checkpoint (safetensors, float32) for the
command-soup example pipeline. Standard library only.

The weights come from a fixed linear congruential generator seeded with --seed, so the
same arguments always give the same bytes.
"""
import argparse
import json
import os
import struct


def lcg(seed):
    state = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        # 24 high bits -> a float in [-1, 1), exactly representable in float32.
        yield ((state >> 40) / float(1 << 23)) - 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    rng = lcg(args.seed)
    tensors = {
        "encoder.weight": [args.dim, args.dim],
        "encoder.bias": [args.dim],
        "head.weight": [2, args.dim],
    }
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        shape = tensors[name]
        count = 1
        for d in shape:
            count *= d
        data = struct.pack("<%df" % count, *(next(rng) for _ in range(count)))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
