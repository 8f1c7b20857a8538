#!/usr/bin/env python3
"""A small fine-tuning loop (torch, CPU, AdamW) that saves checkpoints the
way training frameworks do: each in a new directory OUT/checkpoint-STEP
holding the weights as bf16 model.safetensors (written under a temporary
name, fsynced, renamed) and the optimizer state as optimizer.pt
(torch.save). A copy of every file also goes to REF, for comparison.

usage: train_checkpoints.py OUT REF CHECKPOINTS STEPS_BETWEEN [HIDDEN]
"""
import json, os, struct, sys
import torch

out, ref, n_ckpt, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hidden = int(sys.argv[5]) if len(sys.argv) > 5 else 256
torch.manual_seed(0)
layers = []
for _ in range(4):
    layers += [torch.nn.Linear(hidden, 4 * hidden), torch.nn.GELU(), torch.nn.Linear(4 * hidden, hidden)]
model = torch.nn.Sequential(torch.nn.Embedding(1000, hidden), *layers, torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, 1000))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)


def safetensors_bytes(state):
    header, blobs, off = {}, [], 0
    for name, t in state.items():
        t = t.detach().to(torch.bfloat16).contiguous()
        b = t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_durably(path, data):
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.urandom(4).hex())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


step = 0
for c in range(n_ckpt):
    for _ in range(every):
        x = torch.randint(0, 1000, (16, 32))
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 1000), x.roll(1, dims=1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    for root in (out, ref):
        d = os.path.join(root, f"checkpoint-{step}")
        os.makedirs(d, exist_ok=True)
        write_durably(os.path.join(d, "model.safetensors"), safetensors_bytes(model.state_dict()))
        torch.save(opt.state_dict(), os.path.join(d, "optimizer.pt"))
    print(f"checkpoint-{step}", flush=True)
