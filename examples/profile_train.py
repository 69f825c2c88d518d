"""Where one training step of an examples/train.py model goes: wall time with and without CUDA graphs, and
the GPU kernels of a host-launched step grouped by kind (our quantize kernels, GEMMs, Inductor's fused
kernels, the optimizer, attention).

    python examples/profile_train.py --size 20m --batch 128 --recipes bf16,quartet,quartet2

Why: the accuracy benchmark's 20m model trains 3x-6x slower under the FP4 recipes than under BF16, while
one 7B-shaped linear layer is within 0.5x-1.2x of BF16; this says which kernels take the difference at
small widths. The kernel table is of the host-launched step (CUDA-graph replays may hide their kernels from the
profiler); ``--gaps`` adds, per mode, where the GPU idles between its work. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import triton.testing
from torch.profiler import ProfilerActivity, profile

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples import train
from examples.profile_linear import print_top_kernels

# kernel name fragment -> kind (first match wins; checked in this order)
KINDS = [
    ("quantize_kernel", "fp4 quantize"), ("stats_kernel", "fp4 pre-pass (NVFP4 amax)"), ("fold_kernel", "fp4 fold"),
    ("bf16_values_kernel", "fp4 dequantize"), ("epilogue_kernel", "fp4 GEMM epilogue"), ("epilogue_h32_kernel", "fp4 GEMM epilogue"),
    ("flash", "attention"), ("fmha", "attention"), ("attention", "attention"),
    ("multi_tensor", "optimizer / grad clip"), ("foreach", "optimizer / grad clip"),
    ("gemm", "GEMM"), ("xmma", "GEMM"), ("nvjet", "GEMM"), ("cutlass", "GEMM"), ("sm90", "GEMM"),
    ("triton_", "inductor fused"),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for frag, kind in KINDS if frag in low), "other")


def build_step(size: str, recipe: str, batch: int, seq: int, cudagraphs: bool):
    model = train.build_model(size, seq, 0, "cuda", torch.bfloat16)
    compiled = torch.compile(model, backend="quartet", options={"recipe": recipe, "cudagraphs": cudagraphs})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    train_data, _ = train.load_data(None)
    x, y = (t.cuda() for t in train.get_batch(train_data, batch, seq, torch.Generator().manual_seed(0)))

    def step():  # as examples/train.py's loop, less the data loading and the per-step loss.item()
        loss = compiled(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def grid_table(prof, steps: int, fragments: list[str]) -> None:
    """Launches of the kernels whose name holds one of ``fragments``, grouped by (kernel, grid): the grid says the
    operand's shape (rows / tile rows, columns / tile columns), so this tells which operand a kernel's time is."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for ev in _trace_events(prof):
        name, args = ev.get("name", ""), ev.get("args", {})
        if ev.get("cat") == "kernel" and any(frag in name for frag in fragments):
            groups[(name, str(args.get("grid")))].append(float(ev.get("dur", 0.0)))
    print("| kernel | grid | calls/step | us/call | ms/step |\n|---|---|---:|---:|---:|")
    for (name, grid), times in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {name[:40]} | {grid} | {len(times) / steps:g} | {sum(times) / len(times):.1f} | {sum(times) / 1e3 / steps:.3f} |")


def _trace_events(prof) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        return json.load(open(f.name))["traceEvents"]


def _gpu_work(events: list[dict]) -> list[dict]:
    """A Chrome trace's events that occupy the GPU: kernels, copies and memsets."""
    return [ev for ev in events if ev.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "ts" in ev]


def idle_gaps(events: list[dict]) -> dict[tuple[str, str], list[float]]:
    """The GPU's idle gaps (us) in a Chrome trace's events, by the kinds of work on either side (``kind_of`` for kernels,
    the category for copies and memsets). Work that overlaps earlier work (another stream) only extends the busy time."""
    busy = sorted((float(ev["ts"]), float(ev["ts"]) + float(ev.get("dur", 0.0)), ev.get("name", ""), ev.get("cat", ""))
                  for ev in _gpu_work(events))
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    if not busy:
        return groups

    def kind(ev):
        return kind_of(ev[2]) if ev[3] == "kernel" else ev[3]

    end, prev = busy[0][1], busy[0]
    for ev in busy[1:]:
        if ev[0] > end:
            groups[(kind(prev), kind(ev))].append(ev[0] - end)
        if ev[1] >= end:
            end, prev = ev[1], ev
    return groups


def gap_table(step, steps: int, top: int = 12) -> None:
    """Where the GPU idles between its work (kernels, copies, memsets) over ``steps`` profiled steps: the idle time per
    step, and the largest totals by the kinds of work on either side of a gap (e.g. 'fp4 fold -> GEMM'), each with its
    count and largest single gap. A step whose wall time is well above its kernels' sum loses the rest here."""
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = _gpu_work(_trace_events(prof))
    if not events:
        print("no GPU activity in the trace (a CUDA graph's kernels may be hidden from this profiler)")
        return
    groups = idle_gaps(events)
    start = min(float(ev["ts"]) for ev in events)
    stop = max(float(ev["ts"]) + float(ev.get("dur", 0.0)) for ev in events)
    idle = sum(sum(g) for g in groups.values()) / 1e3 / steps
    print(f"GPU timeline: {(stop - start) / 1e3 / steps:.2f} ms/step from the first to the last GPU work, {idle:.2f} ms/step of it "
          f"idle, {len(events) / steps:.0f} kernels / copies / memsets per step")
    print("| before the gap | after the gap | gaps/step | idle ms/step | largest (us) |\n|---|---|---:|---:|---:|")
    for (a, b), gaps in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"| {a} | {b} | {len(gaps) / steps:g} | {sum(gaps) / 1e3 / steps:.3f} | {max(gaps):.1f} |")


def kernel_table(step, steps: int, top: int, by_grid: list[str]) -> float:
    """Profile ``steps`` host-launched steps; print their kernels grouped by kind and the top ones; GPU ms per step."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = defaultdict(list)  # name -> each launch's device time (us)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            kernels[ev.name].append(ev.device_time_total)
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # kind -> [launches per step, ms per step]
    for name, times in kernels.items():
        k = by_kind[kind_of(name)]
        k[0] += len(times) / steps
        k[1] += sum(times) / 1e3 / steps
    total = sum(v[1] for v in by_kind.values())
    print("| kind | kernels/step | ms/step | share |\n|---|---:|---:|---:|")
    for kind, (n, ms) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"| {kind} | {n:g} | {ms:.3f} | {ms / total:.0%} |")
    print_top_kernels(kernels, steps, top)
    others = {name: times for name, times in kernels.items() if kind_of(name) == "other"}
    if others:  # many small launches: which ones
        print("kernels of kind 'other' (small launches each):")
        print_top_kernels(others, steps, 12)
    if by_grid:
        grid_table(prof, steps, by_grid)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="20m", choices=list(train.SIZES))
    p.add_argument("--recipes", default="bf16,quartet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--by-grid", default="", help="comma-separated kernel name fragments (e.g. quantize_kernel,fold_kernel): their launches by grid")
    p.add_argument("--graphs-only", action="store_true", help="only the CUDA-graph step time of each recipe (no kernel table)")
    p.add_argument("--gaps", action="store_true", help="also where the GPU idles between kernels, in each mode (gap_table)")
    args = p.parse_args()
    tokens = args.batch * args.seq
    for recipe in [r for r in args.recipes.split(",") if r]:
        for graphs in (True,) if args.graphs_only else (True, False):
            step = build_step(args.size, recipe, args.batch, args.seq, graphs)
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            wall = triton.testing.do_bench(step, warmup=5, rep=200, return_mode="median")
            label = f"{recipe} {args.size} {args.batch}x{args.seq} {'CUDA graphs' if graphs else 'host-launched'}"
            print(f"\n## {label}: {wall:.2f} ms/step, {tokens / wall * 1e3:,.0f} tokens/s", flush=True)
            if args.gaps:
                gap_table(step, args.steps)
            if not graphs:
                gpu = kernel_table(step, args.steps, args.top, [f for f in args.by_grid.split(",") if f])
                print(f"GPU kernels {gpu:.2f} ms/step ({gpu / wall:.0%} of the host-launched wall time)", flush=True)
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
