"""`python cpu_ddp.py -m open_clip_train.main ARGS`: open_clip's own trainer on CPU ranks.

open_clip wraps its model in DistributedDataParallel with `device_ids=[device]`, which
torch refuses for a module on the CPU (on GPUs, the card's case, it is what DDP wants).
This drops them for CPU devices and, when TUREEN_TEST_RANKS names a directory, writes
there which rank of which world each process was and where it ran; nothing else of
open_clip changes. tests/slurm.rs runs a two-node open_clip stage through it.
"""

import json
import os
import runpy
import sys

import torch
import torch.distributed as dist

_DDP = torch.nn.parallel.DistributedDataParallel


class CpuDDP(_DDP):
    def __init__(self, module, device_ids=None, *args, **kwargs):
        if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
            device_ids = None
        super().__init__(module, device_ids, *args, **kwargs)
        out = os.environ.get("TUREEN_TEST_RANKS")
        if out:
            seen = {
                "rank": dist.get_rank(),
                "world": dist.get_world_size(),
                "node": os.environ.get("SLURMD_NODENAME"),
                "master_addr": os.environ.get("MASTER_ADDR"),
                "master_port": os.environ.get("MASTER_PORT"),
            }
            with open(os.path.join(out, f"rank-{seen['rank']}.json"), "w") as f:
                json.dump(seen, f)


if sys.argv[1:3] != ["-m", "open_clip_train.main"]:
    sys.exit("usage: cpu_ddp.py -m open_clip_train.main ARGS")
torch.nn.parallel.DistributedDataParallel = CpuDDP
sys.argv = ["open_clip_train.main"] + sys.argv[3:]
runpy.run_module("open_clip_train.main", run_name="__main__", alter_sys=True)
