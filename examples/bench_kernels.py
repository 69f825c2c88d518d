"""Bandwidth of each rotate-quantize kernel against a device-to-device copy, measured in one run.

    python examples/bench_kernels.py [--rows 16384 --cols 4096]

For every kernel use in the recipes (forward X/W, backward E along N, E^T along T read transposed, and
re-quantization of a saved FP4 tensor read transposed) it prints time, achieved bandwidth (bytes read +
written / time) and the ratio to ``torch`` copying the same input (read + write). Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import functools

import torch
import triton.testing

import fp4compile as f4
from fp4compile.kernels.quantize import quantize
from fp4compile.rotations import parse_rotation

CASES = [
    # (label, quantizer, rotation, source)
    ("quartet fwd X: H32+QuEST+mask", "mxfp4_quest", "hadamard-32", "dense"),
    ("quartet bwd E: RHT32+3/4 RTN", "mxfp4_tseng_rtn", "random_hadamard-32", "dense"),
    ("quartet bwd E^T (transposed read)", "mxfp4_tseng_rtn", "random_hadamard-32", "transposed"),
    ("quartet bwd Xq^T requant (packed)", "mxfp4_tseng_rtn", "random_hadamard-32", "packed:mxfp4_quest"),
    ("quartet-sr bwd E: RHT32+3/4 SR", "mxfp4_tseng_sr", "random_hadamard-32", "dense"),
    ("quartet2 fwd X: 4/6", "nvfp4_4over6", None, "dense"),
    ("quartet2 bwd E: RHT128+MS-EDEN", "nvfp4_ms_eden", "random_hadamard-128", "dense"),
    ("quartet2 bwd E^T (transposed read)", "nvfp4_ms_eden", "random_hadamard-128", "transposed"),
    ("quartet2 bwd Xq^T requant (packed)", "nvfp4_ms_eden", "random_hadamard-128", "packed:nvfp4_4over6"),
    ("nvidia fwd X: RTN", "nvfp4_rtn", None, "dense"),
    ("nvidia bwd E: SR", "nvfp4_sr", None, "dense"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--sweep", action="store_true", help="also time tile sizes of two kernels")
    args = p.parse_args()
    x = torch.randn(args.rows, args.cols, device="cuda", dtype=torch.bfloat16)
    copy_ms = triton.testing.do_bench(lambda: x.clone(), return_mode="median")
    copy_bw = 2 * x.numel() * x.element_size() / copy_ms / 1e9  # TB/s: read + write
    print(f"GPU: {torch.cuda.get_device_name()}, input {args.rows}x{args.cols} bf16; device-to-device copy {copy_ms:.3f} ms = {copy_bw:.2f} TB/s")
    print("| kernel | time (ms) | TB/s | vs copy |\n|---|---|---|---|")
    for label, name, rot, source in CASES:
        q = f4.get_quantizer(name)
        rotation = None if rot is None else parse_rotation(rot).matrix(1, "cuda")
        if source.startswith("packed:"):
            src = f4.get_quantizer(source.split(":")[1]).quantize(x.float())
            src = f4.QuantizedTensor(src.codes, src.scales, src.scale_format, src.group_size, src.tensor_scale, src.factor)
            bytes_in = src.codes.numel() + src.scales.numel()
            fn = functools.partial(quantize, src, q, rotation, 1)
        else:
            transpose = source == "transposed"
            bytes_in = x.numel() * 2
            fn = functools.partial(quantize, x, q, rotation, 1, transpose=transpose)
        out, mask = fn()
        bytes_out = out.codes.numel() + out.scales.numel() + (0 if mask is None else mask.numel())
        extra = 2 * x.numel() if q.scale_format.value == "e4m3" and not source.startswith("packed") else 0  # the amax pass reads x again
        ms = triton.testing.do_bench(fn, return_mode="median")
        bw = (bytes_in + bytes_out + extra) / ms / 1e9
        print(f"| {label} | {ms:.3f} | {bw:.2f} | {bw / copy_bw:.0%} |")
    if args.sweep:
        for name, rot in (("mxfp4_quest", "hadamard-32"), ("nvfp4_ms_eden", "random_hadamard-128")):
            q, m = f4.get_quantizer(name), parse_rotation(rot).matrix(1, "cuda")
            for block_r in (16, 32, 64):
                for warps in (2, 4, 8):
                    fn = functools.partial(quantize, x, q, m, 1, block_r=block_r, num_warps=warps)
                    print(f"sweep {name} BLOCK_R={block_r} num_warps={warps}: {triton.testing.do_bench(fn, return_mode='median'):.3f} ms")


if __name__ == "__main__":
    main()
