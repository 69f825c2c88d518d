"""Row-wise against 1x128 block-wise scaled FP8 GEMMs (cuBLAS through ``torch._scaled_mm``) at the Llama-7B shapes.

    python examples/bench_gemm_scaling.py [--tokens 16384]

Why: the FP8 fold of MXFP4 (hopper.md) needs one FP32 scale per row, so no FP8 value of a row can be written
before its largest scale exponent is known: the lowering quantizes to packed codes first and folds them in a
second pass (until session 9: a pre-pass over the input). With one scale per row and 128-element block
(DeepSeek-style ``BlockWise1x128`` on both operands, cuBLAS >= 12.9, sm_90 only) the scale is known inside the
quantize kernel's own tile and the second pass goes away. This
prints, per GEMM of a linear layer's step (forward, grad-input, grad-weight), the time of BF16 ``mm``, the
row-wise FP8 GEMM and the block-wise one, and checks that the block-wise GEMM with power-of-two scales gives
the row-wise GEMM's result on the same exact values (relative error against float64). Needs an sm_90 GPU.
"""

from __future__ import annotations

import argparse

import torch
import triton.testing

SHAPES = [("QKV", 4096, 12288), ("Out", 4096, 4096), ("UpGate", 4096, 22016), ("Down", 11008, 4096)]


def _fp8_pow2_blocks(rows: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 values [rows, k] and power-of-two scales per row and 128-block [rows, k/128] (random binades)."""
    x = torch.randn(rows, k, device="cuda", generator=gen).clamp(-448, 448).to(torch.float8_e4m3fn)
    e = torch.randint(-8, 8, (rows, k // 128), device="cuda", generator=gen).float()
    return x, torch.exp2(e)


def _block_scales(sa: torch.Tensor, sb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K/128] and [N, K/128] scales as torch 2.11's ``_scaled_mm`` takes them for 1x128 x 1x128:
    scale_a [M, K/128] with strides (1, M), scale_b [K/128, N] row-major."""
    return sa.t().contiguous().t(), sb.t().contiguous()


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


def _check(m: int, k: int, n: int, gen: torch.Generator) -> tuple[float, float]:
    """(block-wise, row-wise) relative error against float64 on values that both can represent."""
    a8, sa = _fp8_pow2_blocks(m, k, gen)
    b8, sb = _fp8_pow2_blocks(n, k, gen)
    a = (a8.double().reshape(m, k // 128, 128) * sa.double()[:, :, None]).reshape(m, k)
    b = (b8.double().reshape(n, k // 128, 128) * sb.double()[:, :, None]).reshape(n, k)
    ref = a @ b.t()
    blk_a, blk_b = _block_scales(sa, sb)
    blk = torch._scaled_mm(a8, b8.t(), scale_a=blk_a, scale_b=blk_b, out_dtype=torch.float32)
    # the row-wise GEMM's error on the same FP8 values with each row's first block scale throughout
    row = torch._scaled_mm(a8, b8.t(), scale_a=sa[:, :1].contiguous(), scale_b=sb[:, :1].t().contiguous(), out_dtype=torch.float32)
    ref_row = (a8.double() * sa.double()[:, :1]) @ (b8.double() * sb.double()[:, :1]).t()
    return _rel(blk, ref), _rel(row, ref_row)


def _times(m: int, kk: int, nn: int, gen: torch.Generator) -> tuple[float, float, float | str]:
    """(BF16 mm, row-wise FP8, 1x128 block-wise FP8 or its error) in ms for [m, kk] x [kk, nn], BF16 out."""
    a8, sa = _fp8_pow2_blocks(m, kk, gen)
    b8, sb = _fp8_pow2_blocks(nn, kk, gen)
    a16, b16 = a8.to(torch.bfloat16), b8.to(torch.bfloat16)
    row_a, row_b = sa[:, :1].contiguous(), sb[:, :1].t().contiguous()
    blk_a, blk_b = _block_scales(sa, sb)
    t_bf16 = triton.testing.do_bench(lambda: a16 @ b16.t(), return_mode="median")
    t_row = triton.testing.do_bench(lambda: torch._scaled_mm(a8, b8.t(), scale_a=row_a, scale_b=row_b, out_dtype=torch.bfloat16),
                                    return_mode="median")
    try:
        t_blk = triton.testing.do_bench(lambda: torch._scaled_mm(a8, b8.t(), scale_a=blk_a, scale_b=blk_b, out_dtype=torch.bfloat16),
                                        return_mode="median")
    except RuntimeError as e:
        return t_bf16, t_row, str(e).splitlines()[0][:100]
    return t_bf16, t_row, t_blk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=16384)
    args = p.parse_args()
    t = args.tokens
    gen = torch.Generator(device="cuda").manual_seed(0)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; ms per GEMM (median), speed-up over BF16 mm")
    print("| shape | GEMM | M x K x N | bf16 mm | fp8 row-wise | fp8 1x128 blocks | blocks / row-wise | err blocks | err row-wise |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, k, n in SHAPES:
        # forward y = x W^T [T,K]x[K,N]; grad_input = E W [T,N]x[N,K]; grad_weight = E^T x [N,T]x[T,K]
        for gemm, (m, kk, nn) in (("fwd", (t, k, n)), ("dX", (t, n, k)), ("dW", (n, t, k))):
            t_bf16, t_row, t_blk = _times(m, kk, nn, gen)
            if isinstance(t_blk, str):
                blk, ratio, err_blk, err_row = f"error: {t_blk}", "-", float("nan"), float("nan")
            else:
                blk, ratio = f"{t_blk:.3f} ({t_bf16 / t_blk:.2f}x)", f"{t_row / t_blk:.2f}x"
                err_blk, err_row = _check(min(m, 2048), kk, min(nn, 2048), gen)
            print(f"| {label} | {gemm} | {m}x{kk}x{nn} | {t_bf16:.3f} | {t_row:.3f} ({t_bf16 / t_row:.2f}x) | {blk} | {ratio} | {err_blk:.1e} | {err_row:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
