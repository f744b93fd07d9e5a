#!/usr/bin/env python3
"""Writes ImageNet-1k zero-shot metadata as plain text files, one item per line.

Source: the installed `open_clip` package (open_clip.zero_shot_metadata), so the files
match what open_clip's own zero-shot evaluation uses.

    imagenet-classnames.txt   1,000 class names, in class-index order
    imagenet-templates.txt    the 80 OpenAI prompt templates, `{c}` marks the class name

Usage: python extract_imagenet_metadata.py [OUT_DIR]   (default: this script's folder)
Run with the project's venv (`.venv/bin/python`), which has open_clip_torch installed.
"""

import os
import sys

from open_clip import zero_shot_metadata as meta

# A marker no class name contains: each template is a lambda, so we call it with the
# marker and turn the marker back into the `{c}` placeholder tureen's eval expects.
MARKER = "\x00CLASS\x00"


def template_strings():
    out = []
    for template in meta.OPENAI_IMAGENET_TEMPLATES:
        text = template(MARKER)
        if text.count(MARKER) != 1:
            sys.exit(f"template {text!r} does not use the class name exactly once")
        out.append(text.replace(MARKER, "{c}"))
    return out


def write_lines(path, lines, expected, allowed_duplicates=()):
    if len(lines) != expected:
        sys.exit(f"{path}: expected {expected} lines, got {len(lines)}")
    duplicates = sorted({line for line in lines if lines.count(line) > 1})
    if duplicates != sorted(allowed_duplicates):
        sys.exit(f"{path}: unexpected duplicate lines {duplicates}")
    for line in lines:
        if "\n" in line or line != line.strip() or not line:
            sys.exit(f"{path}: unexpected line {line!r}")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print(f"wrote {path}: {len(lines)} lines")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    # OpenAI's cleaned class names map two pairs of ImageNet synsets to one name each
    # (n03773504/n04008634 "missile", n04355933/n04356056 "sunglasses"); they are kept,
    # since the class index is the line number and open_clip evaluates with them as is.
    write_lines(
        os.path.join(out_dir, "imagenet-classnames.txt"),
        list(meta.IMAGENET_CLASSNAMES),
        1000,
        allowed_duplicates=("missile", "sunglasses"),
    )
    write_lines(os.path.join(out_dir, "imagenet-templates.txt"), template_strings(), 80)


if __name__ == "__main__":
    main()
