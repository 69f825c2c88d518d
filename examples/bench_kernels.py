"""Bandwidth of each rotate-quantize kernel against a device-to-device copy, measured in one run.

    python examples/bench_kernels.py [--rows 16384 --cols 4096]

For every kernel launch of the recipes' triton lowering (forward X into its GEMM form plus the packed form
saved for the backward, backward E along N, E^T along T read transposed, and re-quantization of a saved FP4
tensor read transposed) it prints time, effective bandwidth (the fewest bytes: input read once, outputs
written once, over the time, which includes the pre-pass that finds NVFP4's tensor scale or the fold that writes
MXFP4's FP8 form from the packed codes) and the ratio to ``torch`` copying the same input (read + write). ``--graphs`` times CUDA-graph replays:
the GPU's time alone, as training under ``cudagraphs=True`` sees it (host-launched, a kernel pair of ~0.2 ms can
be bound by the host's launch cost). Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import functools

import torch
import triton.testing

import fp4compile as f4
from fp4compile.kernels.quantize import quantize_for_gemm
from fp4compile.kernels.rotate_quantize import Tile, default_tile
from fp4compile.rotations import parse_rotation

CASES = [
    # (label, quantizer, rotation, source, form, keep_packed): what the triton lowering launches per recipe
    ("quartet fwd X: H32+QuEST -> fp8 + packed + mask", "mxfp4_quest", "hadamard-32", "dense", "fp8", True),
    ("quartet bwd E: RHT32+3/4 RTN -> fp8", "mxfp4_tseng_rtn", "random_hadamard-32", "dense", "fp8", False),
    ("quartet bwd E^T (transposed read) -> fp8", "mxfp4_tseng_rtn", "random_hadamard-32", "transposed", "fp8", False),
    ("quartet bwd Xq^T requant (packed) -> fp8", "mxfp4_tseng_rtn", "random_hadamard-32", "packed:mxfp4_quest", "fp8", False),
    ("quartet-sr bwd E: RHT32+3/4 SR -> fp8", "mxfp4_tseng_sr", "random_hadamard-32", "dense", "fp8", False),
    ("quartet2 fwd X: 4/6 -> bf16 + packed", "nvfp4_4over6", None, "dense", "bf16", True),
    ("quartet2 bwd E: RHT128+MS-EDEN -> bf16", "nvfp4_ms_eden", "random_hadamard-128", "dense", "bf16", False),
    ("quartet2 bwd E^T (transposed read) -> bf16", "nvfp4_ms_eden", "random_hadamard-128", "transposed", "bf16", False),
    ("quartet2 bwd Xq^T requant (packed) -> bf16", "nvfp4_ms_eden", "random_hadamard-128", "packed:nvfp4_4over6", "bf16", False),
    ("nvidia fwd X: RTN -> bf16 + packed", "nvfp4_rtn", None, "dense", "bf16", True),
    ("nvidia bwd E: SR -> bf16", "nvfp4_sr", None, "dense", "bf16", False),
    ("nvidia bwd E^T: RHT16+SR (transposed read) -> bf16", "nvfp4_sr", "random_hadamard-16", "transposed", "bf16", False),
    ("nvidia bwd X^T: RHT16+RTN (transposed read) -> bf16", "nvfp4_rtn", "random_hadamard-16", "transposed", "bf16", False),
]


def _case(case: tuple, x: torch.Tensor, **tile) -> tuple[functools.partial, int]:
    """(the launch of one CASES row on x, bytes it reads); ``tile=Tile(...)`` overrides the launcher's tile."""
    _, name, rot, source, form, keep = case
    q = f4.get_quantizer(name)
    rotation = None if rot is None else parse_rotation(rot).matrix(1)
    if source.startswith("packed:"):
        src = f4.get_quantizer(source.split(":")[1]).quantize(x.float())
        src = f4.QuantizedTensor(src.codes, src.scales, src.scale_format, src.group_size, src.tensor_scale, src.factor)
        return functools.partial(quantize_for_gemm, src, q, rotation, 1, form=form, keep_packed=keep, **tile), src.codes.numel() + src.scales.numel()
    fn = functools.partial(quantize_for_gemm, x, q, rotation, 1, form=form, keep_packed=keep, transpose=source == "transposed", **tile)
    return fn, x.numel() * 2


SWEEP_TILES = [Tile(r, k, w) for r, k, w in ((8, 128, 2), (8, 128, 4), (16, 128, 2), (16, 128, 4), (32, 128, 4), (32, 128, 8),
                                                (64, 128, 4), (64, 128, 8), (64, 128, 16), (32, 64, 4), (64, 64, 4), (64, 64, 8), (64, 64, 16))]


def parse_tiles(spec: str) -> list[Tile]:
    """``"64x128x4,64x128x4x4,64x64x4x1x128"`` (rows x K x warps [x row blocks per program [x register cap]],
    comma-separated) -> tiles, each checked."""
    tiles = []
    for item in filter(None, spec.split(",")):
        parts = item.split("x")
        if len(parts) not in (3, 4, 5) or not all(p.isdigit() for p in parts):
            raise SystemExit(f"--tiles: {item!r} is not ROWSxKxWARPS[xITERS[xREGISTERS]] (e.g. 64x128x4, 64x128x4x4 or 64x64x4x1x128)")
        tile = Tile(*map(int, parts))
        tile.check()
        tiles.append(tile)
    return tiles


def _sweep(x: torch.Tensor, rounds: int, cases: list[tuple], tiles: list[Tile], bench) -> None:
    """Every case under every tile, timed in interleaved rounds (medians) by ``bench``: the default against the fastest."""
    print("| kernel | default tile | default (ms) | fastest tile | fastest (ms) | all (rows x K / warps: ms) |\n|---|---|---|---|---|---|")
    for case in cases:
        fns = {"default": _case(case, x)[0]}
        for tile in tiles:
            fn = _case(case, x, tile=tile)[0]
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a tile the kernel cannot take (too small for tl.dot, too many registers)
                print(f"  {case[0]} {tile}: {type(e).__name__}")
                continue
            fns[tile] = fn
        runs = [{key: bench(fn, return_mode="median") for key, fn in fns.items()} for _ in range(rounds)]
        med = {key: sorted(r[key] for r in runs)[rounds // 2] for key in fns}
        best = min((k for k in med if k != "default"), key=med.get)
        src = case[3]
        rot = 0 if case[2] is None else parse_rotation(case[2]).size
        d = default_tile(rot, src != "dense")
        cells = " ".join(f"{t.label()}: {med[t]:.3f}" for t in med if t != "default")
        print(f"| {case[0]} | {d.label()} | {med['default']:.3f} | {best.label()} | "
              f"{med[best]:.3f} | {cells} |", flush=True)


EPILOGUE_CASES = [  # (label, trust mask, inverse rotation, alpha): the backward GEMMs' epilogues
    ("quartet dX / dW: mask + inverse H32 -> bf16", True, "hadamard-32", False),
    ("NVFP4 GEMMs: alpha -> bf16", False, None, True),
]
EPILOGUE_TILES = [Tile(r, k, w) for r, k, w in ((32, 128, 4), (16, 128, 4), (64, 128, 4), (32, 128, 8), (64, 128, 8), (32, 256, 4),
                                                (32, 256, 8), (64, 256, 8), (128, 128, 8), (16, 256, 4))]


def _epilogue_sweep(rows: int, cols: int, rounds: int, bench) -> None:
    """The backward GEMMs' epilogue (kernels/epilogue.py) on an fp32 [rows, cols] GEMM result under every tile."""
    from fp4compile import formats
    from fp4compile.kernels.epilogue import EPILOGUE_TILE, mask_rotate_cast
    from fp4compile.kernels.rotate_quantize import prepare_rotation

    g = torch.randn(rows, cols, device="cuda")
    print(f"epilogue on fp32 [{rows}, {cols}] (reads 4 B + mask bits, writes 2 B per element); the launcher's choice (the fixed "
          f"Hadamard-32's butterfly kernel, else the matmul kernel on {EPILOGUE_TILE.label()}), then the matmul kernel on each tile")
    print("| epilogue | launcher's | " + " | ".join(t.label() for t in EPILOGUE_TILES) + " |\n|---|---:|" + "---:|" * len(EPILOGUE_TILES))
    for label, with_mask, rot, with_alpha in EPILOGUE_CASES:
        mask = formats.pack_bits(torch.rand(rows, cols, device="cuda") < 0.9) if with_mask else None
        inverse = None if rot is None else prepare_rotation(parse_rotation(rot), None, g.device, inverse=True)
        alpha = torch.tensor(0.37, device="cuda") if with_alpha else None
        fns = {t: functools.partial(mask_rotate_cast, g, mask, inverse, torch.bfloat16, alpha, t) for t in [None, *EPILOGUE_TILES]}
        runs = [{t: bench(fn, return_mode="median") for t, fn in fns.items()} for _ in range(rounds)]
        med = {t: sorted(r[t] for r in runs)[rounds // 2] for t in fns}
        print(f"| {label} | " + " | ".join(f"{med[t]:.3f}" for t in fns) + " |", flush=True)


FOLD_TILES = [(32, 256, 4), (32, 256, 8), (64, 256, 4), (64, 256, 8), (16, 512, 4), (32, 512, 4), (32, 512, 8), (64, 512, 8),
              (16, 1024, 4), (32, 1024, 8), (128, 256, 8), (8, 1024, 4)]


def _fold_sweep(rows: int, cols: int, rounds: int, bench) -> None:
    """The FP8 fold (kernels/fold.py) of packed MXFP4 codes [rows, cols / 2] under every FOLD_TILES tile (reads 0.53 B, writes 1 B
    per element), against the launcher's choice."""
    from fp4compile.kernels.fold import fold_mxfp4_fp8
    from fp4compile.kernels.rotate_quantize import _NO_ROW_EXP

    q = f4.get_quantizer("mxfp4_tseng_rtn").quantize(torch.randn(rows, cols, device="cuda"))
    e_r = torch.full((rows,), _NO_ROW_EXP.value, dtype=torch.int32, device="cuda")
    tiles = [None] + [t for t in FOLD_TILES if cols % t[1] == 0]
    fns = {t: functools.partial(fold_mxfp4_fp8, q.codes, q.scales, e_r, tile=t) for t in tiles}
    runs = [{t: bench(fn, return_mode="median") for t, fn in fns.items()} for _ in range(rounds)]
    med = {t: sorted(r[t] for r in runs)[rounds // 2] for t in fns}
    nbytes = rows * cols * (0.5 + 1 / 32 + 1)
    print(f"FP8 fold of [{rows}, {cols}] (ms, TB/s; rows x elements / warps)\n| tile | ms | TB/s |\n|---|---:|---:|")
    for t, ms in med.items():
        print(f"| {'launcher' if t is None else 'x'.join(map(str, t[:2])) + f'/{t[2]}'} | {ms:.3f} | {nbytes / ms / 1e9:.2f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--sweep", action="store_true", help="also time every kernel under every tile size and warp count")
    p.add_argument("--only", default="", help="comma-separated substrings: time only the kernels whose label holds one (e.g. quartet2,nvidia)")
    p.add_argument("--tiles", default="", help="the sweep's tiles as ROWSxKxWARPS[xITERS[xREGISTERS]],... (default: a fixed list of 13)")
    p.add_argument("--repeat", type=int, default=3,
                   help="time every kernel and the copy this many times, interleaved, and report the medians (the GPU's timings drift)")
    p.add_argument("--graphs", action="store_true",
                   help="time CUDA-graph replays (as training with cudagraphs=True runs them): GPU time without the host's launch cost")
    p.add_argument("--epilogue", action="store_true", help="also time the backward GEMMs' epilogue under every tile (EPILOGUE_TILES)")
    p.add_argument("--fold", action="store_true", help="also time the FP8 fold under every tile (FOLD_TILES)")
    p.add_argument("--once", action="store_true",
                   help="run each case once between cudaProfilerStart/Stop, no timing (for `ncu --profile-from-start off`)")
    args = p.parse_args()
    tiles = parse_tiles(args.tiles) or SWEEP_TILES
    wanted = [w for w in args.only.split(",") if w]
    cases = [c for c in CASES if not wanted or any(w in c[0] for w in wanted)]
    if not cases:
        raise SystemExit(f"--only {args.only!r} matches no kernel; labels: {[c[0] for c in CASES]}")
    x = torch.randn(args.rows, args.cols, device="cuda", dtype=torch.bfloat16)
    timed = []  # (label, fn, bytes moved)
    for case in cases:
        label = case[0]
        fn, bytes_in = _case(case, x)
        values, packed, mask = fn()
        if args.once:
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            fn()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            print(f"| {label} | profiled once |")
            continue
        bytes_out = values.values.numel() * values.values.element_size()
        if packed is not None:
            bytes_out += packed.codes.numel() + packed.scales.numel() + (0 if mask is None else mask.numel())
        timed.append((label, fn, bytes_in + bytes_out))  # the fewest bytes: input read once, outputs written once
    bench = triton.testing.do_bench_cudagraph if args.graphs else triton.testing.do_bench
    if not args.once:
        copy = lambda: x.clone()  # noqa: E731
        runs = [[bench(f, return_mode="median") for f in (copy, *(t[1] for t in timed))] for _ in range(args.repeat)]
        med = [sorted(col)[len(col) // 2] for col in zip(*runs, strict=True)]
        copy_ms = med[0]
        copy_bw = 2 * x.numel() * x.element_size() / copy_ms / 1e9  # TB/s: read + write
        print(f"GPU: {torch.cuda.get_device_name()}, input {args.rows}x{args.cols} bf16; device-to-device copy {copy_ms:.3f} ms = {copy_bw:.2f} TB/s "
              f"({'CUDA-graph replays, ' if args.graphs else ''}median of {args.repeat} interleaved rounds; copy spread {min(r[0] for r in runs):.3f}-{max(r[0] for r in runs):.3f} ms)")
        print("| kernel | time (ms) | spread (ms) | TB/s | vs copy |\n|---|---|---|---|---|")
        for i, (label, _, nbytes) in enumerate(timed, start=1):
            bw = nbytes / med[i] / 1e9
            print(f"| {label} | {med[i]:.3f} | {min(r[i] for r in runs):.3f}-{max(r[i] for r in runs):.3f} | {bw:.2f} | {bw / copy_bw:.0%} |")
    if args.sweep:
        _sweep(x, args.repeat, cases, tiles, bench)
    if args.epilogue:
        _epilogue_sweep(args.rows, args.cols, args.repeat, bench)
    if args.fold:
        _fold_sweep(args.rows, args.cols, args.repeat, bench)


if __name__ == "__main__":
    main()
