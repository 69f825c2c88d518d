"""One linear layer, forward + backward, at the Llama-7B shapes: fp4compile recipes against BF16
``torch.compile`` and torchao's float8 training (row-wise and tensor-wise), measured in one run.

    python examples/bench_linear.py [--tokens 16384] [--recipes quartet,quartet2,nvidia]

Prints a table of times and speed-ups over BF16 (median of triton.testing.do_bench, warm). Needs a CUDA
GPU; torchao is optional (its columns say "n/a" without it).
"""

from __future__ import annotations

import argparse

import torch
import triton.testing
from torch import nn

SHAPES = [("QKV", 4096, 12288), ("Out", 4096, 4096), ("UpGate", 4096, 22016), ("Down", 11008, 4096)]


def _step(model, x, g):
    def run():
        x.grad = None
        for p in model.parameters():
            p.grad = None
        model(x).backward(g)

    return run


def _time(model, x, g) -> float:
    run = _step(model, x, g)
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    return triton.testing.do_bench(run, return_mode="median")


def _torchao(kind: str, k: int, n: int):
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError:
        return None
    model = nn.Sequential(nn.Linear(k, n, bias=False)).cuda().bfloat16()
    convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name(kind))
    return torch.compile(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--recipes", default="quartet,quartet2,nvidia")
    p.add_argument("--cudagraphs", action="store_true", help="the recipes replay CUDA graphs (option 'cudagraphs'); adds BF16 with CUDA graphs")
    args = p.parse_args()
    recipes = args.recipes.split(",")
    graphs = " (fp4compile with CUDA graphs)" if args.cudagraphs else ""
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, tokens {args.tokens}{graphs}; times in ms (fwd+bwd), speed-up vs BF16")
    head = ["shape", "bf16"] + (["bf16 cudagraphs"] if args.cudagraphs else []) + ["f8 rowwise", "f8 tensorwise"] + recipes
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, k, n in SHAPES:
        torch._dynamo.reset()
        x = torch.randn(args.tokens, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn(args.tokens, n, device="cuda", dtype=torch.bfloat16)
        base = nn.Linear(k, n, bias=False).cuda().bfloat16()
        bf16 = _time(torch.compile(base), x, g)
        cells = [f"{label} {k}->{n}", f"{bf16:.3f}"]
        if args.cudagraphs:
            t = _time(torch.compile(base, mode="reduce-overhead"), x, g)
            cells.append(f"{t:.3f} ({bf16 / t:.2f}x)")
        for kind in ("rowwise", "tensorwise"):
            m = _torchao(kind, k, n)
            cells.append("n/a" if m is None else f"{(t := _time(m, x, g)):.3f} ({bf16 / t:.2f}x)")
        for recipe in recipes:
            m = torch.compile(base, backend="quartet", options={"recipe": recipe, "kernels": "triton", "skip": [], "cudagraphs": args.cudagraphs})
            t = _time(m, x, g)
            cells.append(f"{t:.3f} ({bf16 / t:.2f}x)")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
