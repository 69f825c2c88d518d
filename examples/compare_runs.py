"""Compare training runs of ``examples/train.py`` step by step: the multi-GPU check of BENCHMARKS.md.

    python examples/compare_runs.py REFERENCE NOISE RUN [RUN ...]
    python examples/compare_runs.py --seeds one_gpu=A0,A1,A2 ddp=B0,B1,B2    # several seeds per configuration

Each argument is a run folder (its ``checkpoint.pt`` holds every step's training loss, its ``metrics.json``
the validation losses). REFERENCE is the run the others should follow (e.g. one GPU); NOISE is the same
configuration with another seed, whose distance to REFERENCE says what "within noise" means. For each
run: the largest and the mean absolute difference of the per-step training loss to REFERENCE (over the
last half of the steps, once the curves settle), and the final validation loss.

With ``--seeds`` each argument names a configuration and its runs, one per seed (the same seeds in the
same order for every configuration): the final validation losses, their mean and standard deviation, and
for each configuration after the first the difference of means to the first beside the seed-to-seed
standard deviations, and the paired per-seed differences.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.train import load_summary


def load(folder: str) -> tuple[list[float], float]:
    s = load_summary(folder)
    return s["losses"], s["val_loss"]


def distance(a: list[float], b: list[float]) -> tuple[float, float]:
    """(max, mean) of |a - b| over the second half of the steps."""
    if len(a) != len(b):
        raise ValueError(f"runs of different lengths ({len(a)} and {len(b)} steps): train them for the same --steps")
    half = len(a) // 2
    diffs = [abs(x - y) for x, y in zip(a[half:], b[half:], strict=True)]
    return max(diffs), sum(diffs) / len(diffs)


def main(folders: list[str]) -> list[str]:
    if len(folders) < 3:
        raise SystemExit(__doc__)
    ref_losses, ref_val = load(folders[0])
    lines = ["| run | max abs train-loss diff (2nd half) | mean abs diff | final val loss | val diff |", "|---|---:|---:|---:|---:|"]
    lines.append(f"| {folders[0]} (reference) | - | - | {ref_val:.4f} | - |")
    for i, folder in enumerate(folders[1:]):
        losses, val = load(folder)
        top, mean = distance(losses, ref_losses)
        label = f"{folder} (noise: another seed)" if i == 0 else folder
        lines.append(f"| {label} | {top:.4f} | {mean:.4f} | {val:.4f} | {val - ref_val:+.4f} |")
    print("\n".join(lines))
    return lines


def seeds(specs: list[str]) -> list[str]:
    """Final validation losses per configuration over seeds (``name=run,run,...`` each)."""
    groups = {}
    for spec in specs:
        name, _, runs = spec.partition("=")
        if not runs:
            raise SystemExit(f"--seeds takes name=run,run,... arguments, got {spec!r}")
        groups[name] = [load(r)[1] for r in runs.split(",")]
    lines = ["| configuration | final val loss per seed | mean | std over seeds | mean - first's | paired diffs |", "|---|---|---:|---:|---:|---|"]
    first = next(iter(groups.values()))
    for i, (name, vals) in enumerate(groups.items()):
        std = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        diff = "-" if i == 0 else f"{statistics.mean(vals) - statistics.mean(first):+.4f}"
        paired = "-" if i == 0 else ", ".join(f"{v - f:+.4f}" for v, f in zip(vals, first, strict=False))
        lines.append(f"| {name} | {', '.join(f'{v:.4f}' for v in vals)} | {statistics.mean(vals):.4f} | {std:.4f} | {diff} | {paired} |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        seeds(sys.argv[2:])
    else:
        main(sys.argv[1:])
