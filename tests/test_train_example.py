"""CPU smoke test of ``examples/train.py`` (the training script for Llama-style byte-level models).

Claims checked, on the ``tiny`` preset under the default ``quartet`` recipe:

* ``main([...])`` trains through ``torch.compile(backend="quartet")`` and the training loss falls
  (the mean of the last steps' losses is below the first step's and the first steps' mean);
* every evaluation appends a row to ``metrics.json`` and ``metrics.csv`` with the keys
  step, train_loss, val_loss, val_bpb, tokens_per_s, elapsed_s (2 rows for 12 steps, eval every 6),
  and the run leaves ``loss.png`` (when matplotlib is installed) and ``checkpoint.pt``;
* ``--resume`` loads the checkpoint and continues: to ``--steps 14`` it adds a row at step 14 after the
  rows at steps 6 and 12, and its per-step loss history continues the first run's.
* Under torchrun with 2 CPU processes (DDP over Gloo) the losses equal the single-process run's at the same
  global batch (within 1e-5 relative).
* ``examples/bench_train.py`` (GPU only) parses its config list and prints OOM / n/a rows and the ratios to
  BF16 in its table.
* With ``--fsdp`` (FSDP2 ``fully_shard`` per block and root, each block compiled on its own) 2 CPU processes
  give the losses of the single-process ``--fsdp`` run (per-block compile, unsharded) within 1e-5 relative,
  and the weights of their full checkpoints agree (keys are the plain model's). The first loss, before any
  update, equals the whole-model-compiled run's; later ones differ from it (about 1e-3) only because
  per-block compilation keys the backward's rotation seeds differently (see ``train.compile_blocks``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from examples import train

KEYS = ["step", "train_loss", "val_loss", "val_bpb", "tokens_per_s", "elapsed_s"]


def _run(tmp_path, steps: int, *extra: str) -> dict:
    torch._dynamo.reset()
    argv = ["--size", "tiny", "--recipe", "quartet", "--steps", str(steps), "--batch", "4", "--seq", "64",
            "--eval-every", "6", "--eval-batches", "2", "--out", str(tmp_path), *extra]
    (summary,) = train.main(argv)
    return summary


def test_train_tiny_quartet_then_resume(tmp_path):
    first = _run(tmp_path, 12)
    losses = first["losses"]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    last = sum(losses[-3:]) / 3
    assert last < losses[0] and last < sum(losses[:3]) / 3, losses

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["step"] for m in metrics] == [6, 12]
    for m in metrics:
        assert list(m) == KEYS and all(math.isfinite(m[k]) for k in KEYS)
        assert abs(m["val_bpb"] - m["val_loss"] / math.log(2)) < 1e-9
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and list(rows[0]) == KEYS and [int(r["step"]) for r in rows] == [6, 12]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "loss.png").stat().st_size > 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 12 and ckpt["recipe"] == "quartet"

    second = _run(tmp_path, 14, "--resume")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["step"] for m in metrics] == [6, 12, 14]
    assert metrics[-1]["elapsed_s"] >= metrics[1]["elapsed_s"]
    assert second["losses"][:12] == losses and len(second["losses"]) == 14
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 14


def _script_run(out: Path, *extra: str, procs: int = 1, steps: int = 3) -> dict:
    """Run train.py (``steps`` tiny steps on the CPU) in a fresh process, under torchrun when ``procs > 1``; its checkpoint."""
    common = ["--size", "tiny", "--steps", str(steps), "--batch", "4", "--seq", "64", "--eval-every", "3", "--eval-batches", "1", "--device", "cpu"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)] if procs > 1 else [sys.executable]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([*launch, str(Path(train.__file__)), *common, *extra, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out / "checkpoint.pt", weights_only=False)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> dict:
    return _script_run(tmp_path_factory.mktemp("single"))


def test_ddp_two_processes_follow_the_single_process_run(tmp_path, single_run):
    """torchrun with 2 CPU processes (Gloo, DDP) at the same global batch gives the single-process losses:
    each rank quantizes its slice with the same rotations and seeds (module names and steps), and with
    quartet's groups of 32 tokens the split along T changes nothing but FP32 summation order. The first loss
    (before any update) is equal to 1e-6; the later ones within 1e-4, because AdamW's first step moves each
    weight by about lr * sign(g), so a gradient element within summation error of zero moves differently
    (see the FSDP test below; measured: 1.6e-5 on the stdlib text). A rank training on the wrong slice of
    the batch changes the first update itself, not only its last bits."""

    ddp = _script_run(tmp_path / "ddp", procs=2)["losses"]
    ref = single_run["losses"]
    assert len(ddp) == len(ref) == 3 and math.isclose(ddp[0], ref[0], rel_tol=1e-6), (ddp, ref)
    assert all(math.isclose(x, y, rel_tol=1e-4) for x, y in zip(ddp, ref, strict=True)), (ddp, ref)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_fsdp_two_processes_follow_the_single_process_run(tmp_path, single_run):
    """torchrun with 2 CPU processes (Gloo, FSDP2) gives the single-process --fsdp loss and, after one update,
    its weights: the blocks' rotations and seeds agree on both ranks, and the reduce-scatter averages the two
    half batches. The averaged gradients differ from the single process's in FP32 summation order only, but
    AdamW's first step moves each weight by about lr * g / (|g| + eps): the rare gradient element within a
    few eps of zero moves differently (isolated elements, at most lr), and over more steps such differences
    flip FP4 codes and grow, which is why one step is compared."""

    fsdp = _script_run(tmp_path / "fsdp", "--fsdp", procs=2, steps=1)
    unsharded = _script_run(tmp_path / "unsharded", "--fsdp", steps=1)
    assert fsdp["fsdp"] and math.isclose(fsdp["losses"][0], unsharded["losses"][0], rel_tol=1e-5)
    assert math.isclose(fsdp["losses"][0], single_run["losses"][0], rel_tol=1e-5)  # the same model before any update
    assert list(fsdp["model"]) == list(unsharded["model"]) and set(fsdp["model"]) == set(single_run["model"])
    lr, moved, total = train.DEFAULT_LR["tiny"], 0, 0
    for name, weight in fsdp["model"].items():
        assert weight.shape == single_run["model"][name].shape, name  # gathered, not rank 0's shard
        diff = (weight - unsharded["model"][name]).abs()
        assert diff.max() <= 1.01 * lr, name
        moved, total = moved + int((diff > 1e-5).sum()), total + diff.numel()
    assert moved <= 1e-4 * total, (moved, total)


def test_accuracy_benchmark_ordering_check():
    """bench_accuracy's verdict: Quartet II's gap must be below NVIDIA's and naive RTN the worst."""
    from examples.bench_accuracy import ordering_holds

    assert ordering_holds({"quartet2": 0.04, "nvidia": 0.05, "mxfp4-rtn": 0.2}) == [
        "Quartet II gap < NVIDIA gap: yes", "naive mxfp4-rtn is the worst: yes"]
    assert ordering_holds({"quartet2": 0.06, "nvidia": 0.05, "mxfp4-rtn": 0.01})[0].endswith("NO")
    assert "NO (worst: quartet2)" in ordering_holds({"quartet2": 0.3, "nvidia": 0.05, "mxfp4-rtn": 0.2})[1]


def test_profile_gaps_are_the_gpus_idle_time_by_neighbours():
    """profile_train --gaps: idle time between GPU work, by the kinds on either side; overlapping work (another stream)
    only extends the busy interval; CPU events are ignored."""
    from examples.profile_train import idle_gaps

    events = [{"cat": "kernel", "ts": 0, "dur": 10, "name": "quantize_kernel"},
              {"cat": "kernel", "ts": 15, "dur": 10, "name": "fold_kernel"},
              {"cat": "kernel", "ts": 18, "dur": 3, "name": "triton_poi_fused_add"},  # inside the fold's interval: no gap
              {"cat": "cpu_op", "ts": 26, "dur": 50, "name": "aten::mm"},
              {"cat": "gpu_memset", "ts": 30, "dur": 1, "name": "Memset (Device)"},
              {"cat": "kernel", "ts": 40, "dur": 5, "name": "nvjet_sm90_qqtst"}]
    assert dict(idle_gaps(events)) == {("fp4 quantize", "fp4 fold"): [5.0], ("fp4 fold", "gpu_memset"): [5.0],
                                       ("gpu_memset", "GEMM"): [9.0]}
    assert dict(idle_gaps([])) == {}


def test_train_benchmark_table():
    """bench_train's table: ratios to the first (BF16) row, OOM and n/a rows kept, GiB from bytes."""
    from examples import bench_train

    args = bench_train.parse_args(["--recipes", "quartet,nvidia", "--float8", "rowwise"])
    assert (args.size, args.batch, args.seq, args.recipes, args.float8) == ("1b", 16, 2048, ["quartet", "nvidia"], ["rowwise"])
    assert [name for name, _ in bench_train.configs(args.recipes, args.float8, "cuda")] == [
        "bf16 inductor", "torchao float8 rowwise", "fp4compile quartet", "fp4compile nvidia"]
    assert [name for name, _ in bench_train.configs(["quartet"], [], "cuda", cudagraphs=True)] == [
        "bf16 inductor", "bf16 inductor cudagraphs", "fp4compile quartet cudagraphs"]
    assert [name for name, _ in bench_train.configs(["quartet"], [], "cuda", unfused=True)] == [
        "bf16 inductor", "fp4compile quartet", "fp4compile quartet unfused"]
    rows = [{"config": "bf16 inductor", "tokens_per_s": 1000.0, "peak_bytes": 8 << 30, "reserved_bytes": 10 << 30, "status": "ok"},
            {"config": "torchao float8 rowwise", "tokens_per_s": None, "peak_bytes": None, "reserved_bytes": None, "status": "n/a"},
            {"config": "fp4compile quartet", "tokens_per_s": 1500.0, "peak_bytes": 6 << 30, "reserved_bytes": 5 << 30, "status": "ok"},
            {"config": "fp4compile nvidia", "tokens_per_s": None, "peak_bytes": None, "reserved_bytes": None, "status": "OOM"}]
    assert bench_train.table(rows).splitlines()[2:] == [
        "| bf16 inductor | 1,000 | 1.00x | 8.00 | 1.00x | 10.00 | 1.00x |", "| torchao float8 rowwise | n/a | | | | | |",
        "| fp4compile quartet | 1,500 | 1.50x | 6.00 | 0.75x | 5.00 | 0.50x |", "| fp4compile nvidia | OOM | | | | | |"]


def test_bench_accuracy_parallel_matches_sequential(tmp_path):
    """``bench_accuracy --parallel 2`` trains each recipe in its own process with the sequential run's
    arguments, seed and data order: the same per-step losses, read back from the run folders (BF16's
    exactly; FP4's first step exactly, later ones within 1e-3: an FP32 summation-order difference in another
    process can flip an FP4 code, measured at 4e-5 relative by the fourth step)."""
    from examples import bench_accuracy

    args = ["--size", "tiny", "--recipes", "quartet", "--steps", "4", "--batch", "4", "--seq", "64", "--no-cudagraphs"]
    torch._dynamo.reset()
    seq = bench_accuracy.main([*args, "--out", str(tmp_path / "seq")])
    par = bench_accuracy.main([*args, "--out", str(tmp_path / "par"), "--parallel", "2"])
    assert set(par) == set(seq) == {"quartet"}
    for recipe in ("bf16", "quartet"):
        a = train.load_summary(tmp_path / "seq" / recipe)
        b = train.load_summary(tmp_path / "par" / recipe)
        assert len(a["losses"]) == len(b["losses"]) == 4 and a["losses"][0] == b["losses"][0], recipe
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-6 if recipe == "bf16" else 1e-3), recipe
        assert (tmp_path / "par" / f"{recipe}.log").exists()
    # the same table from the finished folders alone (what a GPU call brings back: run.json + metrics.json)
    merged = bench_accuracy.main(["--from", str(tmp_path / "par" / "quartet"), str(tmp_path / "par" / "bf16")])
    assert merged == par


def _fake_run(folder, recipe: str, steps: int = 4, done: int = 4, val: float = 1.0, **facts):
    folder.mkdir(parents=True)
    run = {"recipe": recipe, **{k: 0 for k in train.RUN_KEYS}, "steps": steps, **facts}
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "metrics.json").write_text(json.dumps([{"step": done, "train_loss": val, "val_loss": val, "val_bpb": val / 0.69, "tokens_per_s": 1.0}]))
    return str(folder)


def test_bench_accuracy_from_refuses_runs_that_do_not_compare(tmp_path):
    """``bench_accuracy --from`` builds the table of finished runs trained elsewhere, and refuses, naming the
    difference: runs with another batch (any of train.RUN_KEYS), an unfinished run, no bf16, a folder without run.json."""
    from examples import bench_accuracy

    bf16 = _fake_run(tmp_path / "a" / "bf16", "bf16", val=1.0)
    assert bench_accuracy.main(["--from", bf16, _fake_run(tmp_path / "b" / "quartet", "quartet", val=1.25)]) == {"quartet": 0.25}
    with pytest.raises(SystemExit, match="not comparable.*batch: 0 vs 8"):
        bench_accuracy.main(["--from", bf16, _fake_run(tmp_path / "c" / "nvidia", "nvidia", batch=8)])
    with pytest.raises(SystemExit, match="stopped at step 2 of 4"):
        bench_accuracy.main(["--from", bf16, _fake_run(tmp_path / "d" / "nvidia", "nvidia", done=2)])
    with pytest.raises(SystemExit, match="no bf16 run"):
        bench_accuracy.main(["--from", _fake_run(tmp_path / "e" / "nvidia", "nvidia")])
    (tmp_path / "f").mkdir()
    with pytest.raises(SystemExit, match="no run.json"):
        bench_accuracy.main(["--from", bf16, str(tmp_path / "f")])


def test_bench_accuracy_without_bf16_leaves_its_runs_for_from(capsys):
    """``--no-bf16`` (runs split over several GPU calls): no table without the baseline, and the message says how to
    combine the runs."""
    import argparse

    from examples import bench_accuracy

    summaries = [{"recipe": "quartet2", "out": "runs/a/quartet2", "val_loss": 1.0}]
    assert bench_accuracy.report(summaries, argparse.Namespace(table=None, plot=None)) == {}
    assert "--from runs/a/quartet2" in capsys.readouterr().out


def test_default_corpus_continues_into_site_packages_when_the_stdlib_is_short(tmp_path, monkeypatch):
    """A slim interpreter's stdlib (~10 MB on the GPU machine) would be read many times over by a long run:
    the default corpus then goes on into site-packages' sources, stdlib first, split by file name as before."""
    import sysconfig

    from examples.llama import stdlib_text

    stdlib, site = tmp_path / "lib", tmp_path / "site"
    (stdlib / "site-packages").mkdir(parents=True)
    site.mkdir()
    (stdlib / "a.py").write_bytes(b"A" * 100)
    (stdlib / "site-packages" / "b.py").write_bytes(b"X" * 100)  # skipped under the stdlib: read as site-packages
    (site / "c.py").write_bytes(b"C" * 300)
    (site / "notes.txt").write_bytes(b"T" * 300)  # not a .py file
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(stdlib), "purelib": str(site), "platlib": str(site)})
    assert bytes(stdlib_text(50).to(torch.uint8).tolist()) == b"A" * 50  # enough in the stdlib: nothing else read
    assert bytes(stdlib_text(1000).to(torch.uint8).tolist()) == b"A" * 100 + b"C" * 300  # each root once, in order


def test_data_folder_skips_hidden_folders(tmp_path):
    """``--data FOLDER`` reads every text file below it, sorted, and none under a hidden folder (e.g. .git)."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "objects.txt").write_bytes(b"G" * 5000)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_bytes(b"2" * 5000)
    (tmp_path / "a.txt").write_bytes(b"1" * 5000)
    (tmp_path / "blob.bin").write_bytes(b"\0" * 100)
    train_data, val = train.load_data(str(tmp_path))
    assert bytes(torch.cat([train_data, val]).to(torch.uint8).tolist()) == b"1" * 5000 + b"2" * 5000
