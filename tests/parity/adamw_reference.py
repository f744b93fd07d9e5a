"""torch.optim.AdamW on the parameters and per-step gradients tureen wrote, for
tests/train_loop.rs. Usage: adamw_reference.py IN.safetensors OUT.safetensors CFG.json

IN holds `param.<name>` (initial values) and `grad.<step>.<name>`; CFG.json holds
{"lrs": [...], "beta1", "beta2", "eps", "weight_decay", "decay": [names with decay]}.
OUT gets the final `param.<name>`, `exp_avg.<name>` and `exp_avg_sq.<name>`.
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
data = load_file(sys.argv[1])
with open(sys.argv[3]) as f:
    cfg = json.load(f)
names = sorted(k[len("param."):] for k in data if k.startswith("param."))
params = {n: torch.nn.Parameter(data[f"param.{n}"].clone()) for n in names}
decay = [params[n] for n in names if n in cfg["decay"]]
no_decay = [params[n] for n in names if n not in cfg["decay"]]
opt = torch.optim.AdamW(
    [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg["weight_decay"]}],
    lr=cfg["lrs"][0], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
)
for step, lr in enumerate(cfg["lrs"]):
    for g in opt.param_groups:
        g["lr"] = lr
    for n in names:
        params[n].grad = data[f"grad.{step}.{n}"].clone()
    opt.step()
out = {}
for n in names:
    out[f"param.{n}"] = params[n].detach().contiguous()
    st = opt.state[params[n]]
    out[f"exp_avg.{n}"] = st["exp_avg"].contiguous()
    out[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].contiguous()
save_file(out, sys.argv[2])
