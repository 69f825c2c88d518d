"""Throughput and memory of a full training step (forward, backward, AdamW step) of the ~1B-parameter
Llama-style model of ``examples/train.py``: fp4compile recipes against BF16 ``torch.compile`` (Inductor) and
torchao float8 training (row-wise and tensor-wise), all measured in one run on the same GPU.

    python examples/bench_train.py                                   # 1b, batch 16 x 2048, quartet,quartet2,nvidia
    python examples/bench_train.py --size 125m --steps 5 --warmup 2  # a quick run
    python examples/bench_train.py --recipes quartet --float8 rowwise --batch 8 --json bench_train.json

Every config builds the same BF16 model (same init), compiles each transformer block as torchtitan does (one
block graph serves every layer; ``--whole-model`` compiles the whole model instead) with Inductor (BF16),
``backend="quartet", options={"recipe": r}`` (fp4compile), or Inductor after ``convert_to_float8_training``
on every linear but ``lm_head`` (torchao); the embedding, final norm, head and loss run eagerly. It runs ``--warmup`` steps (compilation and autotuning happen there), then
times ``--steps`` steps on random tokens. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed
steps (weights, gradients, AdamW state and activations). The last lines printed are a markdown table.
A config that runs out of memory says OOM; torchao's rows say n/a when it is not installed. Every config
compiles the model afresh: to split a long run, pass fewer ``--recipes`` or ``--float8 ''`` (BF16, the
reference of the ratios, always runs). Needs a CUDA GPU (``--device cpu --size tiny --seq 64`` only
smoke-tests the script: FP32, no memory figures, no torchao).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import torch

import fp4compile

if __package__ in (None, ""):  # run as `python examples/bench_train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.llama import Llama, LlamaConfig
from examples.train import SIZES, build_model, count_params

GiB = 1 << 30


def _per_block(model: torch.nn.Module, compile_fn, whole: bool) -> torch.nn.Module:
    """``compile_fn`` on the whole model, or (``whole=False``, as torchtitan does) on each transformer block,
    which compiles one block graph for all layers: far faster to compile a 1B model."""
    if whole:
        return compile_fn(model)
    for name, block in model.layers.named_children():
        model.layers.register_module(name, compile_fn(block))
    return model


def _float8(kind: str, whole: bool):
    """A config maker for torchao float8 training (``rowwise`` or ``tensorwise``), or None without torchao."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError:
        return None

    def make(model: torch.nn.Module) -> torch.nn.Module:
        convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name(kind), module_filter_fn=lambda mod, fqn: fqn != "lm_head")
        return _per_block(model, torch.compile, whole)

    return make


def configs(recipes: list[str], float8: list[str], device: str, whole: bool = False, cudagraphs: bool = False,
            unfused: bool = False) -> list[tuple[str, object]]:
    """(name, maker) per config, BF16 first; a maker turns the model into the callable to train (None: n/a).

    With ``cudagraphs`` the fp4compile rows replay CUDA graphs, and BF16 is measured both ways
    (Inductor's ``mode="reduce-overhead"`` is its CUDA-graph setting). With ``unfused`` each recipe is also
    measured with ``fuse_linears=False`` (q/k/v and gate/up as separate layers)."""
    rows: list[tuple[str, object]] = [("bf16 inductor", lambda model: _per_block(model, torch.compile, whole))]
    if cudagraphs:
        graphed = functools.partial(torch.compile, mode="reduce-overhead")
        rows.append(("bf16 inductor cudagraphs", lambda model: _per_block(model, graphed, whole)))
    for kind in float8:
        rows.append((f"torchao float8 {kind}", _float8(kind, whole) if device == "cuda" else None))
    for r in recipes:
        for fuse in ("auto", False) if unfused else ("auto",):
            quartet = functools.partial(torch.compile, backend="quartet", options={"recipe": r, "cudagraphs": cudagraphs, "fuse_linears": fuse})
            name = f"fp4compile {r}" + (" unfused" if fuse is False else "") + (" cudagraphs" if cudagraphs else "")
            rows.append((name, lambda model, q=quartet: _per_block(model, q, whole)))
    return rows


def measure(make, args) -> tuple[float, int | None, int | None]:
    """(tokens/s, peak allocated bytes, peak reserved bytes) of ``args.steps`` training steps after ``args.warmup``
    untimed ones. A CUDA-graph replay takes its memory from the graphs' pool without the allocator, so for
    those rows only the reserved peak (which holds that pool) counts the activations."""
    cuda = args.device == "cuda"
    model = build_model(args.size, args.seq, 0, args.device, torch.bfloat16 if cuda else torch.float32)
    step_fn = make(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator(device=args.device).manual_seed(0)
    batches = [torch.randint(0, model.cfg.vocab, (args.batch, args.seq + 1), device=args.device, generator=gen)
               for _ in range(args.warmup + args.steps)]  # random tokens (not zeros), made before the clock starts

    def step(tokens: torch.Tensor) -> None:
        step_fn(tokens[:, :-1], tokens[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for tokens in batches[: args.warmup]:
        step(tokens)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for tokens in batches[args.warmup :]:
        step(tokens)
    sync()
    seconds = time.perf_counter() - start
    tokens_per_s = args.steps * args.batch * args.seq / seconds
    return tokens_per_s, (torch.cuda.max_memory_allocated() if cuda else None), (torch.cuda.max_memory_reserved() if cuda else None)


def run_all(args) -> list[dict]:
    results = []
    for name, make in configs(args.recipes, args.float8, args.device, args.whole_model, args.cudagraphs, args.unfused):
        row = {"config": name, "tokens_per_s": None, "peak_bytes": None, "reserved_bytes": None, "status": "ok"}
        if make is None:
            row["status"] = "n/a"
        else:
            print(f"{name} ...", flush=True)
            try:
                row["tokens_per_s"], row["peak_bytes"], row["reserved_bytes"] = measure(make, args)
            except torch.cuda.OutOfMemoryError:
                row["status"] = "OOM"
            except Exception as e:  # one broken config must not lose the others' numbers
                if "out of memory" in str(e).lower():  # raised from inside a kernel launcher, say
                    row["status"] = "OOM"
                else:
                    traceback.print_exc()
                    row["status"] = "error"
        results.append(row)
        print(f"{name}: {row['status']}" + (f", {row['tokens_per_s']:,.0f} tokens/s" if row["tokens_per_s"] else ""), flush=True)
        torch._dynamo.reset()  # free this config's compiled graphs, model and optimizer before the next
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return results


def table(results: list[dict]) -> str:
    base = results[0]  # bf16 inductor

    def ratio(key: str, row: dict) -> str:
        return f"{row[key] / base[key]:.2f}x" if row.get(key) and base.get(key) else "-"

    def gib(row: dict, key: str) -> str:
        return f"{row[key] / GiB:.2f}" if row.get(key) is not None else "n/a"

    lines = ["| config | tokens/s | vs bf16 | peak allocated GiB | vs bf16 | peak reserved GiB | vs bf16 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | {r['status']} | | | | | |")
            continue
        lines.append(f"| {r['config']} | {r['tokens_per_s']:,.0f} | {ratio('tokens_per_s', r)} | {gib(r, 'peak_bytes')} | {ratio('peak_bytes', r)} "
                     f"| {gib(r, 'reserved_bytes')} | {ratio('reserved_bytes', r)} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1b", choices=list(SIZES), help="model preset of examples/train.py (default 1b)")
    p.add_argument("--batch", type=int, default=16,
                   help="sequences per step (default 16: the largest power of two at which 1b fits an 80 GB GPU under BF16, 50.5 GiB peak; 32 takes 95 GiB)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--recipes", default="quartet,quartet2,nvidia", help="comma-separated fp4compile recipes")
    p.add_argument("--float8", default="rowwise,tensorwise", help="torchao float8 recipes to compare ('' for none)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke test of the script only")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument("--cudagraphs", action="store_true", help="fp4compile rows replay CUDA graphs; adds a BF16 row with CUDA graphs")
    p.add_argument("--whole-model", action="store_true", help="compile the whole model, not each block (slow to compile at 1B)")
    p.add_argument("--unfused", action="store_true", help="also each recipe with fuse_linears=False (q/k/v, gate/up as separate layers)")
    args = p.parse_args(argv)
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    args.float8 = [r.strip() for r in args.float8.split(",") if r.strip()]
    if set(args.float8) - {"rowwise", "tensorwise", "rowwise_with_gw_hp"}:
        p.error(f"--float8: choose from rowwise, tensorwise, rowwise_with_gw_hp, not {args.float8}")
    unknown = [r for r in args.recipes if r not in fp4compile.recipes()]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; choose from {fp4compile.recipes()}")
    if min(args.batch, args.seq, args.warmup, args.steps) < 1:
        p.error("--batch, --seq, --warmup and --steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_train.py needs a CUDA GPU (none is visible); --device cpu only smoke-tests the script")
    results = run_all(args)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    with torch.device("meta"):
        params = count_params(Llama(LlamaConfig(**SIZES[args.size])))
    header = (f"{gpu}, torch {torch.__version__}: {args.size} model ({params / 1e6:,.1f}M parameters, "
              f"{'BF16' if args.device == 'cuda' else 'FP32'}), batch {args.batch} x seq {args.seq}, AdamW, "
              f"{args.steps} timed steps after {args.warmup} warm-up")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "gpu": gpu, "torch": torch.__version__, "size": args.size, "params": params, "batch": args.batch, "seq": args.seq,
            "warmup": args.warmup, "steps": args.steps, "results": results}, indent=1))
    print(f"\n{header}\n\n{table(results)}")
    return results


if __name__ == "__main__":
    main()
