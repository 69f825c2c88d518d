"""Train a Llama-style byte-level language model with fp4compile, and compare FP4 recipes against BF16.

The model (``examples/llama.py``) is compiled with ``torch.compile(model, backend="quartet",
options={"recipe": ..., "seed": ...})`` and trained with AdamW (betas 0.9/0.95, weight decay 0.1),
a cosine learning-rate schedule with 10% linear warmup (decaying to 10% of the peak) and gradient
clipping at 1.0. Data is byte-level (vocabulary 256): by default the Python standard library's sources
(split into train/validation by file, as ``stdlib_text`` does), or any text file or folder with ``--data``
(the last 5% of its bytes are the validation split).

    python examples/train.py --size tiny --steps 200                      # CPU smoke run (~0.5M parameters)
    python examples/train.py --size 125m --recipe quartet2 --steps 5000   # one recipe, on a GPU
    python examples/train.py --size 30m --compare bf16,quartet,quartet2   # same init and data order each
    python examples/train.py --size 30m --data ~/corpus/ --out runs/mine  # your own text
    python examples/train.py --size 30m --steps 8000 --resume             # continue runs/<recipe>/checkpoint.pt
    torchrun --nproc_per_node 2 examples/train.py --size 125m --batch 32  # DDP: --batch is the global batch
    torchrun --nproc_per_node 8 examples/train.py --size 1b --fsdp        # FSDP2, each block compiled on its own

Each run writes to ``--out`` (default ``runs/<recipe>``; with ``--compare``, ``<out>/<recipe>``):
``run.json`` (what makes runs comparable: size, steps, batch, seq, seed, data, learning rate, evaluation),
``metrics.json`` and ``metrics.csv`` (one row per evaluation: step, train_loss, val_loss, val_bpb,
tokens_per_s, elapsed_s), ``loss.png`` (needs matplotlib) and ``checkpoint.pt`` (model, optimizer, step,
RNG and data-order state, metrics; also every ``--save-every`` steps). ``--resume`` continues from it up
to ``--steps``. The backend counts its steps per compiled graph, so a resumed run draws the backward's
random rotations from a seed derived from (``--seed``, resume step): statistically the same run, not
bit-identical to an uninterrupted one.

``--fsdp`` shards parameters, gradients and optimizer state with FSDP2 (``fully_shard`` on each block, then
on the root) and compiles each block on its own, as torchtitan does (see ``compile_blocks``); the checkpoint
is the full state dict, gathered to rank 0. Without torchrun it runs the same per-block compile unsharded.

Presets (``--size``; every dim, hidden width and head_dim is a multiple of 128, except tiny's head_dim 32,
so every recipe's quantization groups fit):

    tiny  ~0.5M   dim 128,  2 layers,  4 heads, hidden 384
    20m   ~19.5M  dim 512,  6 layers,  4 heads, hidden 1408
    30m   ~30M    dim 512,  8 layers,  4 heads, hidden 1792
    125m  ~121M   dim 768, 12 layers,  6 heads, hidden 3328
    350m  ~346M   dim 1024, 24 layers, 8 heads, hidden 3328
    1b    ~1.03B  dim 2048, 20 layers, 16 heads, hidden 5632
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import fp4compile
from fp4compile.seeds import derive_seed

if __package__ in (None, ""):  # run as `python examples/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.llama import Llama, LlamaConfig, bits_per_byte, get_batch, stdlib_text

# LlamaConfig kwargs per preset, and each preset's default peak learning rate.
SIZES: dict[str, dict] = {
    "tiny": dict(dim=128, layers=2, heads=4, hidden=384),
    "20m": dict(dim=512, layers=6, heads=4, hidden=1408),  # the accuracy benchmark's model
    "30m": dict(dim=512, layers=8, heads=4, hidden=1792),
    "125m": dict(dim=768, layers=12, heads=6, hidden=3328),
    "350m": dict(dim=1024, layers=24, heads=8, hidden=3328),
    "1b": dict(dim=2048, layers=20, heads=16, hidden=5632),
}
DEFAULT_LR = {"tiny": 3e-3, "20m": 1.5e-3, "30m": 1.5e-3, "125m": 6e-4, "350m": 3e-4, "1b": 2e-4}
METRIC_KEYS = ["step", "train_loss", "val_loss", "val_bpb", "tokens_per_s", "elapsed_s"]
VAL_SEED = 1234  # validation batches are the same for every recipe, seed and evaluation


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def build_model(size: str, seq: int, seed: int, device: str, dtype: torch.dtype) -> Llama:
    """The preset's model, initialised from ``seed`` (the same weights for every recipe)."""
    cfg = LlamaConfig(**SIZES[size], max_seq=max(seq, 256))
    torch.manual_seed(seed)
    return Llama(cfg).to(device=device, dtype=dtype)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, or every non-binary file under a folder (recursively, sorted, hidden ones skipped)."""
    if path.is_file():
        return path.read_bytes()
    chunks = []
    for dirpath, dirnames, filenames in os.walk(path):  # top-down: pruning dirnames skips hidden folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            data = (Path(dirpath) / name).read_bytes()
            if b"\0" not in data[:8192]:  # skip binary files
                chunks.append(data)
    return b"".join(chunks)


def load_data(data_path: str | None, max_bytes: int = 32 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) byte tensors: the stdlib split by file (train capped at ``max_bytes``), or ``data_path``
    with its last 5% held out."""
    if data_path is None:
        return stdlib_text(max_bytes), stdlib_text(max(1 << 20, max_bytes // 8), split="validation")
    path = Path(data_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--data {data_path}: no such file or folder")
    raw = _read_bytes(path)
    if len(raw) < 4096:
        raise ValueError(f"--data {data_path}: only {len(raw)} bytes of text")
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    cut = int(data.numel() * 0.95)
    return data[:cut], data[cut:]


def lr_at(step: int, total: int, peak: float, warmup_frac: float = 0.1, min_frac: float = 0.1) -> float:
    """Linear warmup over the first 10% of ``total`` steps, then cosine decay to ``min_frac * peak``."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, val: torch.Tensor, batches: int, batch: int, seq: int, device: str) -> float:
    """Mean validation loss (nats per byte) over ``batches`` fixed batches."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    total = 0.0
    for _ in range(batches):
        x, y = (t.to(device) for t in get_batch(val, batch, seq, gen))
        total += model(x, y).item()
    return total / batches


def resolve_device(device: str, dtype: str) -> tuple[str, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bf16" if device.startswith("cuda") else "fp32"
    return device, {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


# --------------------------------------------------------------------------------------------
# metrics, plot, checkpoint
# --------------------------------------------------------------------------------------------


# the arguments that define a run's numbers: runs are comparable when these agree (recipe aside)
RUN_KEYS = ("size", "steps", "batch", "seq", "seed", "data", "data_bytes", "lr", "eval_every", "eval_batches", "dtype")


def run_facts(recipe: str, args) -> dict:
    """``run.json``: the recipe and the RUN_KEYS arguments (the default learning rate resolved)."""
    facts = {k: getattr(args, k) for k in RUN_KEYS}
    facts["lr"] = args.lr if args.lr is not None else DEFAULT_LR[args.size]
    return {"recipe": recipe, **facts}


def write_metrics(out: Path, metrics: list[dict]) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_KEYS)
        w.writeheader()
        w.writerows(metrics)


def plot_losses(out: Path, recipe: str, losses: list[float], metrics: list[dict]) -> Path | None:
    """DIR/loss.png: per-step training loss and the validation loss at each evaluation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: loss plot skipped")
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.7, label="train")
    if metrics:
        ax.plot([m["step"] for m in metrics], [m["val_loss"] for m in metrics], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/byte)")
    ax.set_title(f"{recipe}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "loss.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _progress(total: int, initial: int):
    """A tqdm bar when tqdm is importable and stdout is a terminal, else None (plain lines are printed)."""
    if not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a plain run."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str) -> str:
    """Join the process group under torchrun (NCCL on GPUs, Gloo on CPUs); returns this rank's device."""
    import torch.distributed as dist

    _, world, local_rank = distributed()
    if world == 1 or dist.is_initialized():
        return f"cuda:{local_rank}" if world > 1 and device.startswith("cuda") else device
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return f"cuda:{local_rank}"
    dist.init_process_group("gloo")
    return device


def _mean_over_ranks(value: torch.Tensor) -> float:
    import torch.distributed as dist

    if not dist.is_initialized():
        return value.item()
    value = value.detach().clone()
    dist.all_reduce(value)
    return value.item() / dist.get_world_size()


def compile_blocks(model: Llama, options: dict, mesh=None) -> Llama:
    """FSDP2 as torchtitan applies it: compile each transformer block with the backend, ``fully_shard`` each
    block over ``mesh``, then the root (with no mesh the blocks are only compiled). Returns ``model``, changed
    in place. The embedding, final norm, head and loss run eagerly (the head stays high precision
    under every recipe anyway).

    Rotation seeds: the blocks share one compiled graph, so the backend sees module names relative to the
    block (``attn.q_proj``, not ``layers.3.attn.q_proj`` as under a whole-model compile) and counts steps per
    call of that graph: block i at training step t draws the seeds of step ``t * layers + i``. The backward's
    rotations and rounding are therefore still fresh per layer and per step, and identical on every rank
    (every rank calls the blocks in the same order), but they are not those of a whole-model compile: an
    ``--fsdp`` run matches an unsharded ``--fsdp`` run, and a run without it only statistically.
    """
    from torch.distributed.fsdp import fully_shard

    for name, block in model.layers.named_children():
        block = torch.compile(block, backend="quartet", options=options)  # an OptimizedModule: "_orig_mod" in its names
        if mesh is not None:
            fully_shard(block, mesh=mesh)
        model.layers.register_module(name, block)
    if mesh is not None:
        fully_shard(model, mesh=mesh)
    return model


def full_state_dicts(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts, on the CPU of rank 0 (empty elsewhere); a collective under
    FSDP. Keys are the plain model's parameter names (without ``_orig_mod``); the optimizer's are names too."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, opt, options=options)


def load_full_state_dicts(model: torch.nn.Module, opt: torch.optim.Optimizer, model_sd: dict, opt_sd: dict) -> None:
    """The inverse of :func:`full_state_dicts`: every rank passes the full dicts and keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_sd, options=options)
    set_optimizer_state_dict(model, opt, opt_sd, options=options)


def train_one(recipe: str, args, data: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Train (or resume) one run under ``recipe``; returns a summary dict (final val loss/bpb, paths, losses).

    Under torchrun each rank trains on its slice of the same global batch (DDP, or FSDP2 with ``--fsdp``,
    averages the gradients), so a run on W processes follows the same global batches as a single-process
    run; the backward's rotation signs and rounding seeds come from module names and steps, hence agree on
    every rank. Rank 0 writes.
    """
    device, dtype = resolve_device(args.device, args.dtype)
    rank, world, _ = distributed()
    device = init_distributed(device)
    if args.batch % world:
        raise ValueError(f"--batch {args.batch} is the global batch: it must divide among {world} processes")
    main_rank = rank == 0
    out = Path(args.out_dirs[recipe])
    out.mkdir(parents=True, exist_ok=True)
    if main_rank:
        (out / "run.json").write_text(json.dumps(run_facts(recipe, args), indent=1))
    train_data, val_data = data if data is not None else load_data(args.data, args.data_bytes)
    peak_lr = args.lr if args.lr is not None else DEFAULT_LR[args.size]

    model = build_model(args.size, args.seq, args.seed, device, dtype)
    gen = torch.Generator().manual_seed(args.seed)  # data order: the same for every recipe
    start_step, metrics, losses, elapsed0 = 0, [], [], 0.0

    ckpt_path = out / "checkpoint.pt"
    ckpt = None
    if args.resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu" if args.fsdp else device, weights_only=False)
        if ckpt["size"] != args.size or ckpt["recipe"] != recipe:
            raise ValueError(f"--resume: {ckpt_path} is a {ckpt['size']}/{ckpt['recipe']} run, not {args.size}/{recipe}")
        if ckpt.get("fsdp", False) != args.fsdp:  # the optimizer state is keyed by parameter names under --fsdp
            raise ValueError(f"--resume: {ckpt_path} was written {'with' if ckpt.get('fsdp') else 'without'} --fsdp; resume it the same way")
        start_step = ckpt["step"]

    # The backend counts steps per compiled graph from 0; a resumed run gets a fresh base seed instead.
    compile_seed = args.seed if start_step == 0 else derive_seed(args.seed, "resume", start_step) & 0x7FFFFFFF
    options = {"recipe": recipe, "seed": compile_seed, "cudagraphs": args.cudagraphs}
    if args.fsdp:  # before the optimizer is built: FSDP2 replaces the parameters by sharded ones
        mesh = None
        if world > 1:  # explicit: fully_shard's default mesh is on CUDA whenever there is a GPU, even for --device cpu
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(torch.device(device).type, (world,))
        compiled = compile_blocks(model, options, mesh)
    else:
        wrapped = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
        compiled = torch.compile(wrapped, backend="quartet", options=options)
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=0.1)
    if ckpt is not None:
        if args.fsdp:
            load_full_state_dicts(model, opt, ckpt["model"], ckpt["optimizer"])
        else:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["data_generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.startswith("cuda") and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        metrics, losses = ckpt["metrics"], ckpt["losses"]
        elapsed0 = metrics[-1]["elapsed_s"] if metrics else 0.0
        del ckpt
        if main_rank:
            print(f"[{recipe}] resumed from {ckpt_path} at step {start_step}")
    if main_rank:
        parallel = ("FSDP2 " if world > 1 else "per-block compile, ") if args.fsdp else ("DDP " if world > 1 else "")
        print(f"[{recipe}] {args.size}: {count_params(model) / 1e6:.2f}M parameters, {parallel}{world} x {device} {str(dtype).removeprefix('torch.')}, "
              f"steps {start_step}->{args.steps}, batch {args.batch} x {args.seq} bytes, lr {peak_lr:g} -> {out}", flush=True)

    def checkpoint(step: int) -> None:
        model_sd, opt_sd = full_state_dicts(model, opt) if args.fsdp else (model.state_dict(), opt.state_dict())
        if not main_rank:
            return
        save_checkpoint(ckpt_path, {
            "model": model_sd, "optimizer": opt_sd, "fsdp": args.fsdp, "step": step, "recipe": recipe, "size": args.size,
            "data_generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.startswith("cuda") else None,
            "metrics": metrics, "losses": losses, "args": {k: v for k, v in vars(args).items() if k != "out_dirs"},
        })

    tokens_per_step = args.batch * args.seq
    bar = _progress(args.steps, start_step) if main_rank else None
    run_start = time.time()
    window_start, window_losses, timed_steps, tps = time.time(), [], 0, 0.0
    for step in range(start_step, args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, peak_lr)
        x, y = get_batch(train_data, args.batch, args.seq, gen)  # the global batch, the same on every rank
        per = args.batch // world
        x, y = (t[rank * per : (rank + 1) * per].to(device, non_blocking=True) for t in (x, y))
        loss = compiled(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = _mean_over_ranks(loss)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"[{recipe}] loss is {loss_value} at step {step + 1}")
        losses.append(loss_value)
        window_losses.append(loss_value)
        done = step + 1
        if step == start_step:  # the first step compiles: leave it out of tokens/s
            window_start = time.time()
        else:
            timed_steps += 1
            tps = timed_steps * tokens_per_step / max(time.time() - window_start, 1e-9)
        if not main_rank:
            pass
        elif bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tps:,.0f}")
        elif done % args.log_every == 0 or done == args.steps:
            print(f"[{recipe}] step {done:6d}/{args.steps}  loss {loss_value:.4f}  lr {lr_at(step, args.steps, peak_lr):.2e}  "
                  f"{tps:,.0f} tok/s", flush=True)

        if done % args.eval_every == 0 or done == args.steps:
            val_loss = evaluate(compiled, val_data, args.eval_batches, args.batch, args.seq, device)
            metrics.append({
                "step": done, "train_loss": sum(window_losses) / len(window_losses), "val_loss": val_loss,
                "val_bpb": bits_per_byte(val_loss), "tokens_per_s": tps, "elapsed_s": elapsed0 + time.time() - run_start,
            })
            if main_rank:
                write_metrics(out, metrics)
                msg = f"[{recipe}] eval step {done}: val loss {val_loss:.4f} ({bits_per_byte(val_loss):.3f} bits/byte)"
                print(msg, flush=True) if bar is None else bar.write(msg)
            window_start, window_losses, timed_steps = time.time(), [], 0
        if args.save_every and done % args.save_every == 0 and done != args.steps:
            checkpoint(done)
    if bar is not None:
        bar.close()

    if metrics and main_rank:
        write_metrics(out, metrics)
    checkpoint(max(start_step, args.steps))
    plot = plot_losses(out, recipe, losses, metrics) if main_rank else None
    return run_summary(recipe, out, max(start_step, args.steps), metrics, losses, params=count_params(model),
                       plot=str(plot) if plot else None)


def run_summary(recipe: str, out: str | Path, steps: int, metrics: list[dict], losses: list[float], **extra) -> dict:
    """A run's summary: the last evaluation's numbers, the per-step losses and every evaluation (plus ``extra``)."""
    last = metrics[-1] if metrics else {}
    return {"recipe": recipe, "out": str(out), "steps": steps, "val_loss": last.get("val_loss"), "val_bpb": last.get("val_bpb"),
            "train_loss": last.get("train_loss"), "tokens_per_s": last.get("tokens_per_s"), "losses": losses, "metrics": metrics, **extra}


def load_summary(out: str | Path, recipe: str | None = None) -> dict:
    """The summary ``train_one`` returned, read back from a finished run's folder (``metrics.json`` and the
    per-step losses of ``checkpoint.pt``): for runs trained in other processes."""
    out = Path(out)
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    metrics = json.loads((out / "metrics.json").read_text())
    return run_summary(recipe or ckpt["recipe"], out, ckpt["step"], metrics, ckpt["losses"])


def print_comparison(summaries: list[dict]) -> None:
    """Final validation loss and bits/byte per recipe, and the gap to bf16 (or to the first recipe)."""
    base = next((s for s in summaries if s["recipe"] == "bf16"), summaries[0])
    print(f"\n{'recipe':>12}  {'val loss':>9}  {'bits/byte':>9}  {'gap to ' + base['recipe']:>14}  {'tok/s':>10}")
    for s in summaries:
        if s["val_loss"] is None:
            print(f"{s['recipe']:>12}  (no evaluation)")
            continue
        gap = s["val_loss"] - base["val_loss"]
        rel = 100 * gap / base["val_loss"]
        print(f"{s['recipe']:>12}  {s['val_loss']:>9.4f}  {s['val_bpb']:>9.4f}  {gap:>+8.4f} ({rel:+.1f}%)  {s['tokens_per_s']:>10,.0f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="30m", choices=list(SIZES), help="model preset (default 30m)")
    p.add_argument("--recipe", default="quartet", choices=fp4compile.recipes())
    p.add_argument("--compare", default=None, help="comma-separated recipes trained one after another, e.g. bf16,quartet,quartet2")
    p.add_argument("--data", default=None, help="text file or folder (recursive); default: Python's stdlib sources (then site-packages if more is needed)")
    p.add_argument("--data-bytes", type=int, default=32 << 20,
                   help="default corpus: read at most this many bytes of Python sources for training (one epoch of a long run)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per preset)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=1000, help="also checkpoint every N steps (0: only at the end)")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>; with --compare, <out>/<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt up to --steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 under torchrun (fully_shard per block, each block compiled on its own)")
    p.add_argument("--cudagraphs", action="store_true", help="replay the compiled steps as CUDA graphs (backend option 'cudagraphs'; CUDA only)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on cuda, fp32 on cpu")
    args = p.parse_args(argv)

    args.recipes = [r.strip() for r in args.compare.split(",") if r.strip()] if args.compare else [args.recipe]
    unknown = [r for r in args.recipes if r not in fp4compile.recipes()]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; choose from {fp4compile.recipes()}")
    for name in ("steps", "batch", "seq", "eval_every", "eval_batches", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.compare:
        root = Path(args.out) if args.out else Path("runs")
        args.out_dirs = {r: str(root / r) for r in args.recipes}
    else:
        args.out_dirs = {args.recipe: args.out or str(Path("runs") / args.recipe)}
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    data = load_data(args.data, args.data_bytes)
    source = args.data or "Python sources (stdlib, then site-packages)"
    main_rank = distributed()[0] == 0
    if main_rank:
        print(f"data: {source}: {data[0].numel() / 1e6:.2f}M training bytes, {data[1].numel() / 1e6:.2f}M validation bytes")
        epochs = args.steps * args.batch * args.seq / data[0].numel()
        if epochs > 1:
            print(f"warning: {args.steps} steps x {args.batch} x {args.seq} bytes read the training text {epochs:.1f} times: "
                  "the model may memorise it and its validation loss rise; pass more text (--data, --data-bytes) or fewer steps")
    summaries = []
    for recipe in args.recipes:
        torch._dynamo.reset()  # each recipe compiles afresh
        summaries.append(train_one(recipe, args, data))
    if not main_rank:
        return summaries
    if len(summaries) > 1:
        print_comparison(summaries)
    else:
        s = summaries[0]
        if s["val_loss"] is not None:
            print(f"\n[{s['recipe']}] final val loss {s['val_loss']:.4f} nats ({s['val_bpb']:.4f} bits/byte); outputs in {s['out']}")
    return summaries


if __name__ == "__main__":
    main()
