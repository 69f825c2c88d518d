"""Host (CPU) cost of each piece of one quantized linear layer's step, at a size where the GPU is idle.

    python examples/profile_host.py [--recipe quartet]

Times, per call and without a profiler attached (which distorts Python-heavy code), a bare Triton launch,
the quantize kernel launcher, each lowering function, each fp4compile op through the dispatcher, and the
compiled layer's forward + backward. The GPU work is a few microseconds per call, so these are the times
the host needs to keep the GPU fed: a step whose host time exceeds its GPU time leaves the GPU waiting.
Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import fp4compile
from fp4compile.config import get_recipe
from fp4compile.kernels.fold import block_values_bf16
from fp4compile.kernels.quantize import quantize_for_gemm
from fp4compile.lowering import triton_ops
from fp4compile.lowering.layout_plan import plan_linear
from fp4compile.ops import _unflatten


def _per_call_us(fn, n: int = 200) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    host = time.perf_counter() - t0
    torch.cuda.synchronize()
    return host / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="quartet")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    n, r = args.size, get_recipe(args.recipe)
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    e = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    seed = torch.tensor(5)
    forms = {p.operand: p.form.value for p in plan_linear(r, "triton", x.device) if p.gemm == "output"}
    xq = triton_ops.quantize(x, r, "input", 5, forms["input"])
    wq = triton_ops.quantize(w, r, "weight", 5, forms["weight"])
    xqt, wqt = _unflatten(r, r.output.a, *xq[:3]), _unflatten(r, r.output.b, *wq[:3])
    q = fp4compile.get_quantizer(r.output.a)
    form = forms["input"] if forms["input"] != "packed" else ("fp8" if q.scale_format.value == "e8m0" else "bf16")
    ops = torch.ops.fp4compile
    x_mask = xq[3] if xq[3].numel() else None
    w_mask = wq[3] if wq[3].numel() else None
    rows = [
        ("torch.empty (one CUDA allocation)", lambda: torch.empty(n, n, device="cuda")),
        ("one Triton launch (bf16_values_kernel)", lambda: block_values_bf16(xq[0], xq[1], q.group_size, e8m0=q.scale_format.value == "e8m0")),
        (f"quantize_for_gemm ({form}: {'kernel + fold' if form == 'fp8' else 'pre-pass + kernel'})", lambda: quantize_for_gemm(x, q, None, 1, form=form)),
        ("lowering quantize (X, forward)", lambda: triton_ops.quantize(x, r, "input", 5, forms["input"])),
        ("lowering output_gemm", lambda: triton_ops.output_gemm(xqt, wqt, torch.bfloat16)),
        ("lowering grad_input", lambda: triton_ops.grad_input([e], wqt, w, x_mask, n, r, 7, torch.bfloat16)),
        ("lowering grad_weight", lambda: triton_ops.grad_weight([e], xqt, x, w_mask, n, r, 7, torch.bfloat16)),
        ("op quantize (dispatcher)", lambda: ops.quantize(x, args.recipe, "input", seed, 0, "triton", forms["input"])),
        ("op grad_input (dispatcher)", lambda: ops.grad_input([e], *wq[:3], w, x_mask, n, args.recipe, seed, torch.bfloat16, "triton")),
    ]
    lin = nn.Linear(n, n, bias=False).cuda().bfloat16()
    xin = x.clone().requires_grad_(True)
    for name, model in (("bf16", torch.compile(lin)), (args.recipe, torch.compile(lin, backend="quartet", options={"recipe": args.recipe, "skip": []}))):
        rows.append((f"compiled linear fwd+bwd: {name}", lambda m=model: m(xin).backward(e)))
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; host microseconds per call, [{n}x{n}] tensors")
    print("| piece | host us/call |\n|---|---|")
    for label, fn in rows:
        print(f"| {label} | {_per_call_us(fn):.0f} |")


if __name__ == "__main__":
    main()
