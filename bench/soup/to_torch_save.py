#!/usr/bin/env python3
"""Rewrite gen_ckpts.py's safetensors checkpoints with torch.save, in open_clip's layout
({"epoch", "name", "state_dict"}), for the torch.save soup benchmark.

usage: to_torch_save.py IN.safetensors OUT.pt EPOCH
"""
import sys

import torch
from safetensors.torch import load_file

src, out, epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.save({"epoch": epoch, "name": "bench", "state_dict": load_file(src)}, out)
