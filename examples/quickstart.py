"""fp4compile's main job: compile a small Llama-style model with ``backend="quartet"``, show what was
rewritten, train it on real text (the Python standard library's sources, byte-level), and print its loss
next to the same model trained in high precision.

    python examples/quickstart.py                     # CPU: a few minutes
    python examples/quickstart.py --recipe quartet2 --steps 200

Runs unchanged on a GPU (the model is then trained in bfloat16).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import fp4compile

if __package__ in (None, ""):  # run as `python examples/quickstart.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.llama import Llama, LlamaConfig, bits_per_byte, get_batch, stdlib_text


def train(recipe: str, args, data: torch.Tensor, val: torch.Tensor, device: str, dtype: torch.dtype) -> list[float]:
    torch.manual_seed(args.seed)
    model = Llama(LlamaConfig()).to(device=device, dtype=dtype)
    compiled = torch.compile(model, backend="quartet", options={"recipe": recipe, "seed": args.seed})
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(args.seed)  # same data order for every recipe
    losses, start = [], time.time()
    for step in range(args.steps):
        x, y = (t.to(device) for t in get_batch(data, args.batch, args.seq, gen))
        loss = compiled(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"  [{recipe:>9}] step {step:4d}  loss {loss.item():.4f}  ({time.time() - start:.0f}s)", flush=True)
    with torch.no_grad():
        vgen = torch.Generator().manual_seed(1)
        val_loss = sum(compiled(*(t.to(device) for t in get_batch(val, args.batch, args.seq, vgen))).item() for _ in range(4)) / 4
    return losses, val_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="quartet", choices=fp4compile.recipes())
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    data, val = stdlib_text(4 << 20), stdlib_text(1 << 20, split="validation")
    print(f"fp4compile quickstart: {device}, {dtype}, {data.numel() / 1e6:.1f}M training bytes of Python's stdlib")

    model = Llama(LlamaConfig()).to(device=device, dtype=dtype)
    x, y = (t.to(device) for t in get_batch(data, args.batch, args.seq, torch.Generator().manual_seed(0)))
    print(fp4compile.explain(model, x, y, recipe=args.recipe))
    torch._dynamo.reset()

    results = {}
    for recipe in (args.recipe, "bf16"):
        print(f"\ntraining under {recipe!r} ({args.steps} steps, batch {args.batch} x {args.seq} bytes)")
        results[recipe] = train(recipe, args, data, val, device, dtype)
    print(f"\n{'step':>6}  {args.recipe:>10}  {'bf16':>10}")
    fp4_losses, hp_losses = results[args.recipe][0], results["bf16"][0]
    for step in range(0, args.steps, max(1, args.steps // 8)):
        print(f"{step:>6}  {fp4_losses[step]:>10.4f}  {hp_losses[step]:>10.4f}")
    (_, v4), (_, v16) = results[args.recipe], results["bf16"]
    print(f"\nvalidation: {args.recipe} {v4:.4f} nats ({bits_per_byte(v4):.3f} bits/byte), "
          f"bf16 {v16:.4f} ({bits_per_byte(v16):.3f} bits/byte), gap {v4 - v16:+.4f}")


if __name__ == "__main__":
    main()
