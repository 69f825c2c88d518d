"""Reference FP4 GEMMs: block values multiplied in float32, tensor scales and factors after.

This is what a block-scaled tensor-core GEMM computes: each operand's ``e2m1 * group scale`` is exact
in float32, products are accumulated in float32, and the epilogue multiplies by ``alpha``, the
product of both operands' tensor scales (NVFP4) and decode factors (4/3 each for the Tseng 3/4 rule,
hence 16/9).

    out[M, N] = (A_blk[M, K] @ B_blk[N, K]^T) * (alpha_A * alpha_B)        # FP32 accumulation

An operand may also be a plain float tensor (left in high precision): its alpha is 1.
"""

from __future__ import annotations

import torch

from fp4compile.quantized import QuantizedTensor

Operand = QuantizedTensor | torch.Tensor


def operand_values(op: Operand) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(float32 values a GEMM multiplies, the alpha its epilogue applies)."""
    if isinstance(op, QuantizedTensor):
        return op.block_values(), op.alpha
    return op.float(), 1.0


def gemm_nt(a: Operand, b: Operand, out_dtype: torch.dtype) -> torch.Tensor:
    """``a @ b^T`` for operands quantized along their shared last (inner) dimension."""
    a_val, a_alpha = operand_values(a)
    b_val, b_alpha = operand_values(b)
    if a_val.shape[-1] != b_val.shape[-1]:
        raise ValueError(f"gemm_nt: inner dimensions differ: {tuple(a_val.shape)} @ {tuple(b_val.shape)}^T")
    out = a_val @ b_val.t()  # [M, K] @ [K, N] -> [M, N], float32 accumulation
    return (out * (a_alpha * b_alpha)).to(out_dtype)
