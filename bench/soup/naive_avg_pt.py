#!/usr/bin/env python3
"""naive_avg.py for torch.save checkpoints: torch.load each file (weights_only=True), sum
its state_dict in float32, divide by the count, save bfloat16 safetensors. The baseline
of bench/soup/torch_save.sh.

usage: naive_avg_pt.py OUT.safetensors IN.pt...
"""
import sys

import torch
from safetensors.torch import save_file

out, paths = sys.argv[1], sys.argv[2:]
acc = None
for p in paths:
    sd = torch.load(p, map_location="cpu", weights_only=True)["state_dict"]
    if acc is None:
        acc = {k: v.float() for k, v in sd.items()}
    else:
        for k, v in sd.items():
            acc[k] += v.float()
    del sd
save_file({k: (v / len(paths)).to(torch.bfloat16) for k, v in acc.items()}, out)
