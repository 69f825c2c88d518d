"""Accuracy of one quantized linear layer's three GEMMs against the exact (float64) ones, per recipe and kernel target.

    python examples/check_gradients.py [--tokens 4096 --k 1024 --n 1024] [--recipes quartet,quartet-sr,...]

For each recipe it runs the fp4compile ops on the ``reference`` and the ``triton`` lowering (on the GPU when
there is one) with the same inputs and seed, and prints the SQNR (dB) of y, dX and dW against the float64
result, and the cosine similarity of the triton result with the reference one. Both lowerings implement the
same numerics, so their SQNRs must agree closely (stochastic recipes: within a dB or so); a lowering whose
SQNR is far below the other's has a bug.
"""

from __future__ import annotations

import argparse

import torch

import fp4compile
from fp4compile.config import get_recipe
from fp4compile.lowering.layout_plan import plan_linear


def _sqnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    noise = (a.double() - ref).pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(ref.pow(2).sum() / noise))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--recipes", default=",".join(r for r in fp4compile.recipes() if r != "bf16"))
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    t, k, n = args.tokens, args.k, args.n
    x = (torch.randn(t, k, device=dev) * torch.exp(torch.randn(1, k, device=dev))).bfloat16()  # outlier columns
    w = (torch.randn(n, k, device=dev) / k**0.5).bfloat16()
    e = (torch.randn(t, n, device=dev) * 1e-3).bfloat16()
    exact = {"y": x.double() @ w.double().t(), "dX": e.double() @ w.double(), "dW": e.double().t() @ x.double()}
    ops, seed = torch.ops.fp4compile, torch.tensor(11, dtype=torch.int64)
    kernels = ["reference", "triton"] if dev == "cuda" else ["reference"]
    print(f"[{t}x{k}] -> {n} on {dev}; SQNR in dB against float64 (higher is better), cos = cosine(triton, reference)")
    print("| recipe | kernel | y | dX | dW | cos y / dX / dW |\n|---|---|---|---|---|---|")
    for recipe in args.recipes.split(","):
        out = {}
        for kernel in kernels:
            forms = {pl.operand: pl.form.value for pl in plan_linear(get_recipe(recipe), kernel, x.device) if pl.gemm == "output"}
            xq = ops.quantize(x, recipe, "input", seed, 0, kernel, forms["input"])
            wq = ops.quantize(w, recipe, "weight", seed, 0, kernel, forms["weight"])
            values = (xq[4], xq[5], wq[4], wq[5]) if forms["input"] == forms["weight"] != "packed" else ()
            y = ops.output_gemm(*xq[:3], *wq[:3], recipe, torch.bfloat16, kernel, *values)
            x_mask = xq[3] if xq[3].numel() else None
            w_mask = wq[3] if wq[3].numel() else None
            dx = ops.grad_input([e], *wq[:3], w, x_mask, k, recipe, seed, torch.bfloat16, kernel)
            dw = ops.grad_weight([e], *xq[:3], x, w_mask, k, recipe, seed, torch.bfloat16, kernel)
            out[kernel] = {"y": y, "dX": dx, "dW": dw}
            cos = "-"
            if kernel == "triton":
                cos = " / ".join(f"{_cos(out['triton'][key], out['reference'][key]):.4f}" for key in ("y", "dX", "dW"))
            print(f"| {recipe} | {kernel} | " + " | ".join(f"{_sqnr(out[kernel][key], exact[key]):.1f}" for key in ("y", "dX", "dW")) + f" | {cos} |")


if __name__ == "__main__":
    main()
