"""Where the time of one quantized linear layer goes: a kernel-level profile of forward + backward.

    python examples/profile_linear.py [--recipe quartet] [--k 4096 --n 4096 --tokens 16384]

Prints the wall time of a step (median of do_bench), the GPU busy time inside it, the CUDA kernels by
total time, and the host-side synchronizations (``cudaStreamSynchronize`` / ``cudaMemcpy``) per step:
a step whose GPU time is far below its wall time is bound by host work or syncs, not by the kernels.
Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import triton.testing
from torch import nn
from torch.profiler import ProfilerActivity, profile


def _host_profile(step, steps: int, top: int) -> None:
    """Host time per step by Python function (own time), to find what keeps the GPU waiting."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    torch.cuda.synchronize()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(prof).stats
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    print("| host function | calls/step | own ms/step | cumulative ms/step |\n|---|---|---|---|")
    for (file, line, name), (_, calls, own, cum, _) in rows:
        print(f"| {file.split('/')[-1]}:{line} {name} | {calls / steps:g} | {own * 1e3 / steps:.3f} | {cum * 1e3 / steps:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="quartet")
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--cudagraphs", action="store_true", help="replay the step as CUDA graphs (option 'cudagraphs'; BF16: mode reduce-overhead)")
    p.add_argument("--host", type=int, default=0, help="also print the N Python functions with the most host time per step (cProfile)")
    args = p.parse_args()

    x = torch.randn(args.tokens, args.k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(args.tokens, args.n, device="cuda", dtype=torch.bfloat16)
    base = nn.Linear(args.k, args.n, bias=False).cuda().bfloat16()
    if args.recipe == "bf16-inductor":
        model = torch.compile(base, mode="reduce-overhead" if args.cudagraphs else None)
    else:
        model = torch.compile(base, backend="quartet", options={"recipe": args.recipe, "kernels": "triton", "skip": [], "cudagraphs": args.cudagraphs})

    def step():
        x.grad = None
        base.weight.grad = None
        model(x).backward(g)

    profile_step(step, f"{args.recipe} [{args.tokens}x{args.k}] -> {args.n}", args.steps, args.top, args.host)


def profile_step(step, label: str, steps: int = 5, top: int = 25, host: int = 0) -> None:
    """Warm ``step`` up, time it (median of do_bench) and print its GPU busy share, host syncs and top kernels."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    wall = triton.testing.do_bench(step, return_mode="median")

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = defaultdict(list)
    syncs: dict[str, int] = defaultdict(int)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            kernels[ev.name].append(ev.device_time_total)
        elif ev.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaMemcpyAsync", "cudaEventSynchronize"):
            syncs[ev.name] += 1
    gpu_ms = sum(sum(v) for v in kernels.values()) / 1e3 / steps
    print(f"{label}: wall {wall:.3f} ms/step, GPU kernels {gpu_ms:.3f} ms/step ({gpu_ms / wall:.0%} busy)")
    print("host calls per step: " + ", ".join(f"{k} {v / steps:g}" for k, v in sorted(syncs.items())))
    if host:
        cpu = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)[:host]
        print("| host op or CUDA API call (torch.profiler) | calls/step | self ms/step |\n|---|---|---|")
        for e in cpu:
            print(f"| {e.key[:100]} | {e.count / steps:g} | {e.self_cpu_time_total / 1e3 / steps:.3f} |")
        _host_profile(step, steps, host)
    print_top_kernels(kernels, steps, top)


def print_top_kernels(kernels: dict[str, list[float]], steps: int, top: int) -> None:
    """The ``top`` CUDA kernels by total time: ``kernels`` maps a name to its launches' device times (us) over ``steps``."""
    print("| kernel | calls/step | ms/step |\n|---|---:|---:|")
    for name, times in sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"| {name[:110]} | {len(times) / steps:g} | {sum(times) / 1e3 / steps:.3f} |")


if __name__ == "__main__":
    main()
