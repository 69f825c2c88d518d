"""Compile the rotate-quantize kernel for a GPU target without a GPU (Triton's AOT path).

    python -m fp4compile.kernels.compile_check 90 100     # sm_90 (Hopper) and sm_100 (Blackwell)

Every rule, source and output-form variant the launcher can ask for, the pre-pass (stats) kernel, the FP8/BF16
conversion kernels and the epilogue are compiled to PTX and a cubin, so compile errors
that Triton's CPU interpreter does not see (globals that are not constexpr, unsupported conversions) show
up in CI. Must run without TRITON_INTERPRET. Prints one line per variant and exits non-zero on a failure.
"""

from __future__ import annotations

import os
import sys

VARIANTS = [
    # (name, RULE, SR, GROUP, G, PRECISION, SCALED, TRANSPOSED, WRITE_MASK, FORM, WRITE_PACKED): FORM 0 none, 1 FP8, 2 BF16
    # (the kernel's VALUES), 3 Blackwell's FP4 (packed codes + 128x4 blocked scales: VALUES 0, BLOCKED_SCALES); the FP8
    # form writes packed codes (the fold kernel reads them) and the row exponents: WRITE_PACKED with FORM 1
    # SCALED (a saved FP4 tensor's packed codes and scales) is always read transposed; TRANSPOSED is the X^T / E^T read
    ("mxfp4_quest+H32 -> fp8 + packed", 1, False, 32, 32, "bf16", False, False, True, 1, True),
    ("mxfp4_tseng_rtn+RHT32 -> fp8", 2, False, 32, 32, "bf16", False, False, False, 1, True),
    ("mxfp4_tseng_rtn+RHT32 (saved source) -> fp8", 2, False, 32, 32, "bf16", True, True, False, 1, True),
    ("mxfp4_tseng_sr+RHT32 -> fp8", 2, True, 32, 32, "bf16", False, False, False, 1, True),
    ("mxfp4_tseng_sr (transposed, unrotated) -> fp8", 2, True, 32, 0, "bf16", False, True, False, 1, True),
    ("mxfp4_rtn -> packed", 0, False, 32, 0, "bf16", False, False, False, 0, True),
    ("mxfp4_quest+H32 -> packed", 1, False, 32, 32, "bf16", False, False, True, 0, True),
    ("nvfp4_4over6 -> bf16 + packed", 11, False, 16, 0, "bf16", False, False, False, 2, True),
    ("nvfp4_sr -> bf16", 10, True, 16, 0, "bf16", False, False, False, 2, False),
    ("nvfp4_sr+RHT16 (transposed) -> bf16", 10, True, 16, 16, "bf16", False, True, False, 2, False),
    ("nvfp4_sr (transposed, unrotated) -> bf16", 10, True, 16, 0, "bf16", False, True, False, 2, False),
    ("nvfp4_ms_eden+RHT128 (saved source) -> bf16", 12, False, 16, 128, "bf16", True, True, False, 2, False),
    ("nvfp4_rtn_16x16 -> bf16 + packed", 13, False, 16, 0, "bf16", False, False, False, 2, True),
    # the blackwell target's forms (lowering/blackwell.py), as Quartet and Quartet II launch them
    ("mxfp4_quest+H32 -> fp4 + packed", 1, False, 32, 32, "bf16", False, False, True, 3, True),
    ("mxfp4_tseng_rtn+RHT32 (transposed) -> fp4", 2, False, 32, 32, "bf16", False, True, False, 3, False),
    ("mxfp4_tseng_rtn+RHT32 (saved source) -> fp4", 2, False, 32, 32, "bf16", True, True, False, 3, False),
    ("nvfp4_4over6 -> fp4 + packed", 11, False, 16, 0, "bf16", False, False, False, 3, True),
    ("nvfp4_ms_eden+RHT128 (saved source) -> fp4", 12, False, 16, 128, "bf16", True, True, False, 3, False),
]
FP4_FORM = 3
# The FP8 form (MXFP4 folded into FP8, VALUES=1) is the Hopper lowering: Blackwell multiplies packed FP4
# (lowering/blackwell.py), so those variants compile for sm_9x only. (Triton 3.6's sm_100 pipeline also
# rejects the rotated ones: TritonNvidiaGPUOptimizeTMemLayoutsPass, "parent layout must have at least rank >= 2".)
HOPPER_ONLY_VALUES = 1
_SOURCE_TYPES = {"x_ptr": "*bf16", "xs_ptr": "*u8", "alpha_ptr": "*fp32", "codes_ptr": "*u8", "scales_ptr": "*u8", "h_ptr": "*bf16", "rot_scale": "fp32"}


def variant_tile(rule: int, g: int, transposed: bool, *, as_launched: bool):
    """The tile a variant compiles with: the launcher's (``default_tile``) with ``as_launched``, else 32 x 128 / 4 warps."""
    from fp4compile.kernels.rotate_quantize import NV_RTN16, Tile, default_tile

    return default_tile(g, transposed, 16 if rule == NV_RTN16.value else 1) if as_launched else Tile(32, 128, 4)


def compile_variant(capability: int, rule: int, sr: bool, group: int, g: int, precision: str, scaled: bool, transposed: bool, mask: bool,
                    values: int, write_packed: bool, *, as_launched: bool = False):
    """(the compiled quantize kernel of one VARIANTS row, the tile it was compiled for); ``values`` is the row's FORM."""

    from fp4compile.kernels.rotate_quantize import quantize_kernel

    tile = variant_tile(rule, g, transposed, as_launched=as_launched)
    # a saved source (SCALED): the forward's packed tensor of the same scale format (1: MXFP4 / E8M0, 2: NVFP4 / E4M3)
    constexprs = dict(RULE=rule, SR=sr, GROUP=group, G=g, PRECISION=precision, SCALED=(1 if rule < 10 else 2) if scaled else 0,
                      SRC_GROUP=(32 if rule < 10 else 16) if scaled else 1, TRANS_LOAD=transposed,
                      HAS_U=False, WRITE_MASK=mask, CORR=group, WRITE_PACKED=write_packed or values == FP4_FORM,
                      VALUES=0 if values == FP4_FORM else values, WRITE_S32=write_packed or rule >= 10,
                      PLAIN_SCALES=write_packed or values == 1, BLOCKED_SCALES=values == FP4_FORM,
                      BLOCK_R=tile.block_r, BLOCK_K=tile.block_k, ROW_ITERS=tile.row_iters)
    types = {**_SOURCE_TYPES, **({"x_ptr": "*u8"} if scaled else {}), "amax_ptr": "*fp32", "s32_ptr": "*fp32", "alpha_out_ptr": "*fp32", "u_ptr": "*fp32", "us_ptr": "*fp32",
             "mask_ptr": "*u8", "blocked_ptr": "*u8", "val_max": "fp32", "ts_den": "fp32", "inv_val_max": "fp32",
             "inv_ts_den": "fp32", "factor": "fp32", "scratch_ptr": "*fp32",
             "values_ptr": "*bf16" if values == 2 else "*u8", "er_ptr": "*i32", "seed_ptr": "*i64"}
    return _compile(quantize_kernel, constexprs, types, capability, as_launched=as_launched, num_warps=tile.num_warps,
                    options=tile.compile_options()), tile


def compile_stats_kernels(capability: int, *, as_launched: bool = False):
    """NVFP4's pre-pass (the rotated tensor amax, as MS-EDEN's), as (name, compiled kernel, tile)."""
    from fp4compile.kernels.rotate_quantize import NV_EDEN, stats_kernel

    tile = variant_tile(NV_EDEN.value, 128, False, as_launched=as_launched)
    constexprs = dict(SCALED=0, SRC_GROUP=1, TRANS_LOAD=False, G=128, PRECISION="bf16", BLOCK_R=tile.block_r, BLOCK_K=tile.block_k, ROW_ITERS=tile.row_iters)
    yield "stats: tensor amax (RHT128)", _compile(stats_kernel, constexprs, {**_SOURCE_TYPES, "out_ptr": "*fp32"}, capability,
                                                  as_launched=as_launched, num_warps=tile.num_warps), tile


def _compile(kernel, constexprs: dict, types: dict, capability: int, *, as_launched: bool = False, num_warps: int = 4,
             options: dict | None = None):
    """Compile one specialisation of ``kernel`` for sm_<capability>; unlisted runtime arguments are i32. ``options``:
    the launch's compile options (the quantize kernel's ``Tile.compile_options()``, with its register cap); by
    default no FMA contraction, as every launcher here asks.

    ``as_launched``: specialise as Triton's launcher does for the usual call, so that the machine code is
    the one that runs (unit stride along the loaded axis, 16-divisible pointers, strides and sizes).
    """
    import triton
    from triton.backends.compiler import GPUTarget

    names = kernel.arg_names
    attrs = None
    if as_launched:
        unit = "stride_r" if constexprs.get("TRANS_LOAD") else "stride_k"
        constexprs = {**constexprs, unit: 1} if unit in names else constexprs
        sized = {"stride_r", "stride_k", "R", "K", "K_OUT", "out_stride", "elem0", "M"}
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in constexprs and (n.endswith("_ptr") or n in sized)}
    signature = {n: ("constexpr" if n in constexprs else types.get(n, "i32")) for n in names}
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()}, attrs=attrs)
    options = {"enable_fp_fusion": False, **(options or {}), "num_warps": num_warps}
    return triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)


def compile_fold(capability: int, *, as_launched: bool = False):
    """The FP8 fold kernel as the launcher runs it at K = 4096: (compiled kernel, (BLOCK_M, BLOCK_K, warps))."""
    from fp4compile.kernels.fold import fold_kernel, fold_tile

    block_m, block_k, warps = fold_tile(4096)
    types = {"codes_ptr": "*i16", "scales_ptr": "*u8", "out_ptr": "*i32", "er_ptr": "*i32", "rs_ptr": "*fp32", "count_ptr": "*i64"}
    kernel = _compile(fold_kernel, dict(BLOCK_M=block_m, BLOCK_K=block_k, GROUP=32), types, capability, as_launched=as_launched,
                      num_warps=warps)
    return kernel, (block_m, block_k, warps)


def compile_epilogues(capability: int, *, as_launched: bool = False):
    """The backward GEMMs' epilogues as launched for Quartet's dX (mask + inverse Hadamard-32 + cast to bf16), as
    (name, compiled kernel, elements per thread, warps): the matmul kernel on its tile and the butterfly one."""
    from fp4compile.kernels.epilogue import BUTTERFLY_WARPS, EPILOGUE_TILE, epilogue_h32_kernel, epilogue_kernel

    t = EPILOGUE_TILE
    yield ("epilogue_kernel", _compile(epilogue_kernel, dict(HAS_ALPHA=True, HAS_MASK=True, G=32, PRECISION="tf32x3", BLOCK_R=t.block_r, BLOCK_K=t.block_k),
                                       {"g_ptr": "*fp32", "alpha_ptr": "*fp32", "mask_ptr": "*u8", "h_ptr": "*bf16", "rot_scale": "fp32", "out_ptr": "*bf16"},
                                       capability, as_launched=as_launched, num_warps=t.num_warps), t.block_r * t.block_k // (32 * t.num_warps), t.num_warps)
    yield ("epilogue_h32_kernel", _compile(epilogue_h32_kernel, dict(HAS_ALPHA=False, HAS_MASK=True, BLOCK_P=32 * BUTTERFLY_WARPS),
                                           {"g_ptr": "*fp32", "alpha_ptr": "*fp32", "mask_ptr": "*i32", "rot_scale": "fp32", "out_ptr": "*bf16"},
                                           capability, as_launched=as_launched, num_warps=BUTTERFLY_WARPS), 32, BUTTERFLY_WARPS)


def compile_fold_kernels(capability: int):

    from fp4compile.kernels.fold import bf16_values_kernel

    yield "fold_kernel", compile_fold(capability)[0]
    yield "bf16_values_kernel", _compile(bf16_values_kernel, dict(E8M0=False, BLOCK_M=32, BLOCK_K=256, GROUP=16),
                                         {"codes_ptr": "*u8", "scales_ptr": "*u8", "out_ptr": "*bf16"}, capability)
    for name, kernel, *_ in compile_epilogues(capability):
        yield name, kernel


def main(capabilities: list[int]) -> int:
    if os.environ.get("TRITON_INTERPRET"):
        print("compile_check must run without TRITON_INTERPRET", file=sys.stderr)
        return 2
    failed = 0
    for cap in capabilities:
        for name, *args in VARIANTS:
            if cap >= 100 and args[-2] == HOPPER_ONLY_VALUES:
                continue
            try:
                kernel, _ = compile_variant(cap, *args)
                print(f"sm_{cap} {name}: ok ({len(kernel.asm['cubin'])} bytes of cubin)")
            except Exception as err:  # report every variant, then fail
                failed += 1
                print(f"sm_{cap} {name}: FAILED {type(err).__name__}: {str(err)[:2000]}")
        try:
            for name, kernel, *_ in [*compile_stats_kernels(cap), *compile_fold_kernels(cap)]:
                print(f"sm_{cap} {name}: ok ({len(kernel.asm['cubin'])} bytes of cubin)")
        except Exception as err:
            failed += 1
            print(f"sm_{cap} fold kernels: FAILED {type(err).__name__}: {str(err)[:2000]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main([int(c) for c in sys.argv[1:]] or [90]))
