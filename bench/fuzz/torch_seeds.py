"""Writes the seed corpus of the `torch` and `torch-pickle` fuzz targets.

Small `torch.save` files covering what tureen's reader meets in real checkpoints:
float32/bfloat16/float16 state dicts, integer and bool tensors, scalars and empty
tensors, views sharing one storage (slices, a transpose, an offset), `nn.Parameter`s,
a DDP `module.` prefix, and AdamW optimizer state as open_clip saves it.
Usage: python bench/fuzz/torch_seeds.py fuzz/seeds/torch
"""

import collections
import os
import sys

import torch


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    g = lambda *s, dtype=torch.float32: torch.randn(*s).to(dtype)

    seeds = {}
    seeds["f32"] = collections.OrderedDict(w=g(3, 4), b=g(4))
    seeds["bf16"] = {"w": g(2, 3, dtype=torch.bfloat16), "s": g(5, dtype=torch.bfloat16)}
    seeds["f16_ints"] = {
        "h": g(6, dtype=torch.float16),
        "i": torch.arange(5, dtype=torch.int64),
        "i32": torch.arange(3, dtype=torch.int32),
        "u8": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "f64": torch.tensor([1.0, -2.0], dtype=torch.float64),
    }
    base = g(4, 6)
    seeds["views"] = {
        "base": base,
        "row": base[1],  # offset view
        "cols": base[:, 2:4],  # non-contiguous slice
        "t": base.t(),  # transpose of the same storage
        "flat": base.view(-1)[5:17],
    }
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(
        [
            {"params": [model[0].bias, model[1].weight, model[1].bias], "weight_decay": 0.0},
            {"params": [model[0].weight], "weight_decay": 0.2},
        ],
        lr=1e-3,
        betas=(0.9, 0.98),
    )
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    seeds["open_clip"] = {
        "epoch": 1,
        "name": "run",
        "state_dict": state,
        "optimizer": opt.state_dict(),
    }
    seeds["params"] = {"p": torch.nn.Parameter(g(2, 2)), "nested": {"a": [g(2), (g(1), None)], "x": 1.5}}
    for name, obj in seeds.items():
        torch.save(obj, os.path.join(out, f"{name}.pt"))
    print(f"wrote {len(seeds)} seeds to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz/seeds/torch")
