"""Reference numbers from open_clip for tureen's parity test (tests/train_parity.rs).

Usage:
  open_clip_reference.py reference CFG.json OUT_DIR
      Build open_clip.CLIP(**cfg) (no download), save its weights, a fixed batch and
      the features/loss open_clip computes on it (eval mode, float32).
  open_clip_reference.py load CFG.json WEIGHTS BATCH OUT
      Load tureen-written WEIGHTS into open_clip.CLIP(**cfg) with strict=True and save
      the features/loss on BATCH.
"""
import json
import sys

import torch
import open_clip
from safetensors.torch import load_file, save_file


def build(cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    model = open_clip.CLIP(**cfg)
    model.eval()
    return model, cfg


def outputs(model, images, tokens):
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(tokens)
        loss = open_clip.ClipLoss()(
            torch.nn.functional.normalize(img, dim=-1),
            torch.nn.functional.normalize(txt, dim=-1),
            model.logit_scale.exp(),
        )
    return {"image_features": img.contiguous(), "text_features": txt.contiguous(), "loss": loss.reshape(1)}


def reference(cfg_path, out_dir):
    torch.manual_seed(0)
    model, cfg = build(cfg_path)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    # Perturb the zero-initialised / constant tensors so the test sees every parameter.
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if v.is_floating_point():
            sd[k] = v + 0.02 * torch.randn(v.shape, generator=g)
    model.load_state_dict(sd, strict=True)
    save_file(sd, f"{out_dir}/open_clip.safetensors")
    b = 6
    size = cfg["vision_cfg"]["image_size"]
    ctx = cfg["text_cfg"]["context_length"]
    vocab = cfg["text_cfg"]["vocab_size"]
    images = torch.randn(b, 3, size, size, generator=g)
    tokens = torch.randint(1, vocab - 1, (b, ctx), generator=g)
    for i in range(b):
        end = 3 + i
        tokens[i, end] = vocab - 1
        tokens[i, end + 1:] = 0
    save_file({"images": images, "tokens": tokens}, f"{out_dir}/batch.safetensors")
    save_file(outputs(model, images, tokens), f"{out_dir}/reference.safetensors")
    print("params", sum(p.numel() for p in model.parameters()))


def load(cfg_path, weights, batch, out):
    model, _ = build(cfg_path)
    sd = load_file(weights)
    model.load_state_dict(sd, strict=True)
    b = load_file(batch)
    save_file(outputs(model, b["images"], b["tokens"]), out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "reference":
        reference(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "load":
        load(*sys.argv[2:6])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
