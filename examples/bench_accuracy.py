"""Accuracy benchmark: the same ~20M-parameter model trained under every recipe with the same data order
and seed, final validation loss and bits per byte, and each recipe's gap to BF16 beside the papers' gaps.

    python examples/bench_accuracy.py                         # ~20 tokens per parameter, on a GPU
    python examples/bench_accuracy.py --size tiny --steps 20  # a CPU dry run of the pipeline
    python examples/bench_accuracy.py --parallel 6            # one recipe per GPU on a 6+-GPU machine, all at once
    python examples/bench_accuracy.py --from runs/a/* runs/b/*  # the table of finished runs (e.g. from several GPU calls)

The papers' gaps (numerics.md section 5, C4 val loss with a Llama-2 tokenizer, so only the ordering and
rough size carry over to byte-level text): Quartet II's ~30M at D/N 25: NVIDIA 0.0548, Quartet II 0.0430;
Quartet's Table 3, 30M at D/N 25: Quartet 3.49 vs BF16 3.42 (gap ~0.07). The check this script prints:
Quartet II's gap below NVIDIA's, and naive MXFP4 RTN the worst.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples import train

RECIPES = ["bf16", "quartet", "quartet-sr", "quartet2", "nvidia", "mxfp4-rtn"]
# Step time relative to bf16 on the 20m model, batch 128 x 256, CUDA graphs (bf16's tokens/s over the recipe's in the
# 20-tokens-per-parameter runs of session 8, H200): the parallel runs start the longest first, so that they end together.
STEP_COST = {"quartet2": 2.98, "quartet-sr": 2.72, "mxfp4-rtn": 2.55, "nvidia": 2.42, "quartet": 2.27, "bf16": 1.0}
PAPER_GAPS = {"quartet": "~0.07 (Quartet T3, 30M, D/N 25)", "quartet2": "0.0430 (QII, 30M, D/N 25)", "nvidia": "0.0548 (QII, 30M, D/N 25)"}


def ordering_holds(gaps: dict[str, float]) -> list[str]:
    """The papers' ordering, as statements that hold or not."""
    out = []
    if "quartet2" in gaps and "nvidia" in gaps:
        out.append(f"Quartet II gap < NVIDIA gap: {'yes' if gaps['quartet2'] < gaps['nvidia'] else 'NO'}")
    if "mxfp4-rtn" in gaps:
        worst = max(gaps, key=gaps.get)
        out.append(f"naive mxfp4-rtn is the worst: {'yes' if worst == 'mxfp4-rtn' else 'NO (worst: ' + worst + ')'}")
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="20m", choices=list(train.SIZES))
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="also train bf16, the baseline of the gaps (--no-bf16: only --recipes, to combine with a bf16 run later by --from)")
    p.add_argument("--tokens-per-param", type=float, default=20.0)
    p.add_argument("--steps", type=int, default=None, help="overrides --tokens-per-param")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cudagraphs", action=argparse.BooleanOptionalAction, default=None,
                   help="every recipe (bf16 included) replays its steps as CUDA graphs (default: on when there is a GPU)")
    p.add_argument("--parallel", type=int, default=1,
                   help="train this many recipes at once, each in its own process and on its own GPU (logs in <out>/<recipe>.log)")
    p.add_argument("--plot", default=None, help="also draw every recipe's loss curves into this PNG")
    p.add_argument("--table", default=None, help="also write the markdown table (and the ordering checks) to this file")
    p.add_argument("--from", dest="from_runs", nargs="+", default=None, metavar="RUN",
                   help="train nothing: the table of these finished run folders (run.json + metrics.json, bf16 among them), "
                        "checked to be comparable: same size, steps, batch, seq, seed, data, learning rate and evaluation")
    args = p.parse_args(argv)
    if args.from_runs:
        return report(read_runs(args.from_runs), args)
    if args.cudagraphs is None:
        args.cudagraphs = train.torch.cuda.is_available()
    recipes = [r for r in args.recipes.split(",") if r]
    if "bf16" not in recipes and args.bf16:
        recipes.insert(0, "bf16")
    params = train.count_params(train.build_model(args.size, args.seq, args.seed, "meta", train.torch.float32))
    steps = args.steps or max(1, round(args.tokens_per_param * params / (args.batch * args.seq)))
    print(f"accuracy benchmark: {args.size} ({params / 1e6:.1f}M parameters), {steps} steps x {args.batch} x {args.seq} bytes "
          f"= {steps * args.batch * args.seq / params:.1f} tokens per parameter")
    common = (["--size", args.size, "--steps", str(steps), "--batch", str(args.batch), "--seq", str(args.seq),
               "--eval-every", str(-(-steps // 4)), "--eval-batches", "32", "--seed", str(args.seed),
               "--data-bytes", str(max(32 << 20, steps * args.batch * args.seq))]  # the corpus read once: stdlib, then site-packages sources
              + (["--cudagraphs"] if args.cudagraphs else []))
    if args.parallel > 1:
        summaries = train_in_parallel(recipes, common, Path(args.out), args.parallel)
    else:
        summaries = train.main(common + ["--compare", ",".join(recipes), "--out", args.out])
    return report(summaries, args)


def report(summaries: list[dict], args) -> dict[str, float]:
    """Print (and with --table / --plot write) the table of gaps to bf16 and the papers' ordering; returns the gaps
    (none without a bf16 run: the runs then wait in their folders for --from)."""
    if not any(s["recipe"] == "bf16" for s in summaries):
        print(f"no bf16 run: the gaps need one; combine these runs with a bf16 run of the same settings by --from {' '.join(s['out'] for s in summaries)} ...")
        return {}
    base = next(s for s in summaries if s["recipe"] == "bf16")["val_loss"]
    gaps = {s["recipe"]: s["val_loss"] - base for s in summaries if s["recipe"] != "bf16"}
    lines = ["| recipe | val loss (nats/byte) | bits/byte | gap to bf16 | papers' gap | tokens/s |", "|---|---|---|---|---|---|"]
    for s in summaries:
        gap = "-" if s["recipe"] == "bf16" else f"{gaps[s['recipe']]:+.4f}"
        lines.append(f"| {s['recipe']} | {s['val_loss']:.4f} | {s['val_bpb']:.4f} | {gap} | {PAPER_GAPS.get(s['recipe'], '-')} | {s['tokens_per_s']:,.0f} |")
    lines += ["", *ordering_holds(gaps)]
    print("\n" + "\n".join(lines))
    if args.table:
        Path(args.table).write_text("\n".join(lines) + "\n")
    if args.plot:
        plot_curves(summaries, Path(args.plot))
    return gaps


def read_runs(folders: list[str]) -> list[dict]:
    """Summaries of finished runs from their folders' ``run.json`` and ``metrics.json`` (no checkpoint needed: what
    ``device_check.sh accuracy`` brings back), bf16's first. Refused, naming the runs and the difference: a folder
    without them, an unfinished run, a recipe twice, no bf16, or runs whose ``train.RUN_KEYS`` differ."""
    summaries = []
    for folder in map(Path, folders):
        missing = [n for n in ("run.json", "metrics.json") if not (folder / n).is_file()]
        if missing:
            raise SystemExit(f"--from {folder}: no {' or '.join(missing)} there (runs written before run.json existed cannot be checked; train them again)")
        facts = json.loads((folder / "run.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        if not metrics or metrics[-1]["step"] != facts["steps"]:
            done = metrics[-1]["step"] if metrics else 0
            raise SystemExit(f"--from {folder}: the {facts['recipe']} run stopped at step {done} of {facts['steps']}")
        summaries.append(train.run_summary(facts["recipe"], folder, facts["steps"], metrics, [], facts=facts))
    recipes = [s["recipe"] for s in summaries]
    twice = sorted({r for r in recipes if recipes.count(r) > 1})
    if twice:
        raise SystemExit(f"--from: recipe(s) {twice} given more than once; pass one run per recipe")
    if "bf16" not in recipes:
        raise SystemExit(f"--from: no bf16 run among {recipes}: the gaps are to bf16")
    first = summaries[recipes.index("bf16")]
    for s in summaries:
        differ = {k: (first["facts"].get(k), s["facts"].get(k)) for k in train.RUN_KEYS if first["facts"].get(k) != s["facts"].get(k)}
        if differ:
            detail = ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in differ.items())
            raise SystemExit(f"--from: {s['out']} ({s['recipe']}) is not comparable with {first['out']} (bf16): {detail}")
    return sorted(summaries, key=lambda s: s["recipe"] != "bf16")


def train_in_parallel(recipes: list[str], common: list[str], out: Path, slots: int) -> list[dict]:
    """One ``examples/train.py`` process per recipe, ``slots`` at a time, each on its own GPU (CUDA_VISIBLE_DEVICES),
    the slowest recipes first (STEP_COST; unknown ones count as 4x bf16) and the next on the first GPU that frees.

    Same arguments, seed and data order as the sequential run; the summaries are read back from the run folders
    and returned in ``recipes``' order.
    """
    devices = None
    if train.torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(train.torch.cuda.device_count())]
        if slots > len(devices):
            raise SystemExit(f"--parallel {slots}: only {len(devices)} GPU(s) visible; pass at most that many")
    out.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).resolve().parent / "train.py"
    pending, running, free = sorted(recipes, key=lambda r: -STEP_COST.get(r, 4.0)), {}, list(range(slots))
    while pending or running:
        while pending and free:
            recipe, slot = pending.pop(0), free.pop(0)
            env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": devices[slot]} if devices else {}))
            log = open(out / f"{recipe}.log", "w")  # noqa: SIM115 (closed when the process ends)
            proc = subprocess.Popen([sys.executable, str(script), *common, "--recipe", recipe, "--out", str(out / recipe)],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            running[recipe] = (proc, slot, log)
            print(f"[{recipe}] started on {'GPU ' + devices[slot] if devices else 'the CPU'} (log {out / recipe}.log)", flush=True)
        time.sleep(0.5)
        for recipe, (proc, slot, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[recipe]
            free.append(slot)
            if proc.returncode:
                for p, _, lg in running.values():
                    p.kill()
                    lg.close()
                raise RuntimeError(f"[{recipe}] exited with {proc.returncode}; its log: {out / recipe}.log")
            print(f"[{recipe}] done", flush=True)
    return [train.load_summary(out / r, r) for r in recipes]


def plot_curves(summaries: list[dict], path: Path) -> None:
    """Validation loss per evaluation and smoothed training loss per step, one colour per recipe."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: plot skipped")
        return
    fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    for s in summaries:
        losses = s["losses"]
        if losses:
            k = max(1, len(losses) // 50)
            smooth = [sum(losses[i:i + k]) / len(losses[i:i + k]) for i in range(0, len(losses), k)]
            ax_t.plot([i + k for i in range(0, len(losses), k)], smooth, label=s["recipe"])
        else:  # runs read back without their checkpoints (--from): the mean training loss of each evaluation window
            ax_t.plot([m["step"] for m in s["metrics"]], [m["train_loss"] for m in s["metrics"]], "o-", label=s["recipe"])
        ax_v.plot([m["step"] for m in s["metrics"]], [m["val_loss"] for m in s["metrics"]], "o-", label=s["recipe"])
    for ax, title in ((ax_t, "training loss (smoothed)"), (ax_v, "validation loss")):
        ax.set_xlabel("step")
        ax.set_ylabel("nats/byte")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
