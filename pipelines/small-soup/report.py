#!/usr/bin/env python3
"""Prints the small-soup pipeline's metrics table (markdown) from eval metrics files.

    report.py NAME=metrics.json [NAME=metrics.json ...]

Each file is an `eval` stage's `metrics` output: {"zeroshot": {...}, "retrieval": {...}}
with fractions in [0, 1]. Values are printed as percentages. A final line says whether the
soup (the row named `soup`) matches or beats every other row on zero-shot top-1, since that
is the claim of the model card the pipeline reproduces in miniature.
"""

import json
import sys

COLUMNS = [
    ("zero-shot top-1", "zeroshot", "top1"),
    ("top-5", "zeroshot", "top5"),
    ("mean per-class recall", "zeroshot", "mean_per_class_recall"),
    ("image->text R@1", "retrieval", "image_to_text_r1"),
    ("image->text R@5", "retrieval", "image_to_text_r5"),
    ("text->image R@1", "retrieval", "text_to_image_r1"),
    ("text->image R@5", "retrieval", "text_to_image_r5"),
]


def load(arg):
    name, sep, path = arg.partition("=")
    if not sep or not name or not path:
        sys.exit(f"report.py: expected NAME=PATH, got {arg!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return name, json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"report.py: {path}: {e}")


def cell(metrics, section, key):
    value = metrics.get(section, {}).get(key)
    return "-" if value is None else f"{100.0 * value:.1f}"


def main(argv):
    if not argv:
        sys.exit(__doc__.strip())
    rows = [load(a) for a in argv]
    header = ["model"] + [c[0] for c in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|")
    for name, m in rows:
        print("| " + " | ".join([name] + [cell(m, s, k) for _, s, k in COLUMNS]) + " |")
    first = next((m for _, m in rows if "zeroshot" in m), None)
    if first is not None:
        classes = first["zeroshot"].get("classes")
        samples = first["zeroshot"].get("samples")
        if classes:
            print(f"\nzero-shot: {samples} held-out images, {classes} classes (chance top-1 {100.0 / classes:.1f}%)")
    top1 = {name: m.get("zeroshot", {}).get("top1") for name, m in rows}
    soup = top1.get("soup")
    others = {n: v for n, v in top1.items() if n != "soup" and v is not None}
    if soup is not None and others:
        best = max(others.values())
        verdict = "matches or beats" if soup >= best else "is below"
        names = ", ".join(others)
        print(f"soup top-1 {100.0 * soup:.1f}% {verdict} the best of {names} ({100.0 * best:.1f}%)")


if __name__ == "__main__":
    main(sys.argv[1:])
