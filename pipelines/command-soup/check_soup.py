#!/usr/bin/env python3
"""Checks that a soup is the weighted average of its ingredients (float32 tolerance)
and prints a small report. Usage: check_soup.py SOUP WEIGHTS CKPT... (WEIGHTS: comma
separated, or `uniform`). Standard library only; exits 1 on a mismatch."""
import json
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32", f"{path}: {name} is {info['dtype']}"
        out[name] = struct.unpack("<%df" % ((b - a) // 4), body[a:b])
    return out


def main():
    soup_path, weights, parts = sys.argv[1], sys.argv[2], sys.argv[3:]
    soup = load(soup_path)
    ingredients = [load(p) for p in parts]
    w = [1.0] * len(parts) if weights == "uniform" else [float(x) for x in weights.split(",")]
    total = sum(w)
    worst = 0.0
    for name, values in soup.items():
        for i, v in enumerate(values):
            expected = sum(wi * ing[name][i] for wi, ing in zip(w, ingredients)) / total
            worst = max(worst, abs(v - expected))
    ok = worst < 1e-6
    print(f"tensors: {len(soup)}")
    print(f"ingredients: {len(parts)}")
    print(f"weights: {w}")
    print(f"max |soup - average|: {worst:.3g}")
    print("ok" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
