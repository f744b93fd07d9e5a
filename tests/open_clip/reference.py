#!/usr/bin/env python3
"""References for tests/open_clip_stage.rs, computed with torch and open_clip.

  soup OUT W1,W2,... IN...   torch.load each checkpoint (weights_only=True), take its
                             state_dict (DDP `module.` stripped), average in float32 with
                             one FMA per input (acc.addcmul_(x.float(), w)), divide by the
                             float32 sum of the weights, cast back; save_file to OUT
  moments CKPT MODEL_DIR OUT open_clip's optimizer state mapped to parameter names the
                             way open_clip_train builds its parameter groups, from the
                             model's named_parameters(): exp_avg.<name>, exp_avg_sq.<name>
  strip CKPT OUT             the checkpoint without its optimizer state
"""

import sys

import torch
from safetensors.torch import save_file


def state_dict(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj.get("state_dict", obj)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def soup(out, weights, paths):
    sds = [state_dict(p) for p in paths]
    ws = [float(w) for w in weights.split(",")]
    res = {}
    for name, first in sds[0].items():
        if not first.is_floating_point():
            res[name] = first.contiguous()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32)
        for sd, w in zip(sds, ws):
            w = torch.tensor(w, dtype=torch.float32)
            acc.addcmul_(sd[name].float(), w)
            total += w
        res[name] = (acc / total).to(first.dtype).contiguous()
    save_file(res, out)


def moments(ckpt, model_dir, out):
    import open_clip
    model = open_clip.create_model("local-dir:" + model_dir)
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    groups = [[n for n, p in named if exclude(n, p) and p.requires_grad],
              [n for n, p in named if not exclude(n, p) and p.requires_grad]]
    opt = torch.load(ckpt, map_location="cpu", weights_only=True)["optimizer"]
    res = {}
    for names, group in zip(groups, opt["param_groups"]):
        assert len(names) == len(group["params"])
        for name, i in zip(names, group["params"]):
            for key in ("exp_avg", "exp_avg_sq"):
                res[f"{key}.{name}"] = opt["state"][i][key].contiguous()
    save_file(res, out)


def strip(ckpt, out):
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    torch.save({"epoch": obj["epoch"], "name": obj["name"], "state_dict": obj["state_dict"]}, out)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"soup": lambda: soup(args[0], args[1], args[2:]), "moments": lambda: moments(*args),
     "strip": lambda: strip(*args)}[cmd]()
