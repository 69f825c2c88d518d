"""The GEMMs' epilogue in one pass: alpha, trust mask, inverse forward rotation, cast.

Quartet's gradients come out of the GEMM in the forward's rotated domain (fp32 ``[R, K]``); the reference
(``fp4compile.lowering.triton_ops._finish`` / ``fp4compile.reference.linear._finish_grad``) then does

    g = g * alpha         # tensor scales and factors of an exact-product (BF16) GEMM, when it has any
    g = g * mask          # QuEST straight-through estimator: clipped elements get no gradient
    g = g @ blockdiag(M)^T  # undo the forward Hadamard along K
    g = g.to(out_dtype)

as three or four passes over a 4-byte tensor. This kernel reads ``g`` and the mask bits once and writes
the result once. The rotation is a small matmul (``tl.dot``) of +-1 entries scaled after accumulation,
as in the reference, so only the FP32 summation order differs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fp4compile.kernels.rotate_quantize import (
    PreparedRotation,
    Tile,
    _precision,
    _rotate,
    _rotation_matrix,
    device_rotation,
    placeholder,
    rotation_size,
)


@triton.jit
def epilogue_kernel(g_ptr, alpha_ptr, mask_ptr, h_ptr, rot_scale, out_ptr, R, K,
                    HAS_ALPHA: tl.constexpr, HAS_MASK: tl.constexpr, G: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = rows[:, None] < R
    g = tl.load(g_ptr + rows[:, None] * K + ks[None, :], mask=ok, other=0.0)
    if HAS_ALPHA:
        g = g * tl.load(alpha_ptr)
    if HAS_MASK:
        mb = tl.load(mask_ptr + rows[:, None] * (K // 8) + (pid_k * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8))[None, :], mask=ok, other=0)
        bits = (mb.to(tl.int32)[:, :, None] >> tl.arange(0, 8)[None, None, :]) & 1  # bit i of byte j: element 8j + i
        g = tl.reshape(tl.reshape(g, (BLOCK_R, BLOCK_K // 8, 8)) * bits.to(tl.float32), (BLOCK_R, BLOCK_K))
    if G > 0:
        g = _rotate(g, _rotation_matrix(h_ptr, G, PRECISION), rot_scale, BLOCK_R, BLOCK_K, G, PRECISION)
    tl.store(out_ptr + rows[:, None] * K + ks[None, :], g.to(out_ptr.dtype.element_ty), mask=ok)


def supports_width(k: int, inverse_rotation: torch.Tensor | PreparedRotation | None) -> bool:
    """Whether the kernel takes rows of ``k`` elements (a multiple of 32 and of the rotation size)."""
    return k % max(rotation_size(inverse_rotation), 32) == 0


# Session 11 also tried the fixed Hadamard-32's inverse as a butterfly in registers, each thread owning whole 32-column
# groups loaded as 16-byte chunks (13 static instructions per element against 32, no shared memory): 0.218 ms against
# 0.134 here on an H200 (docs/bench_logs/bench_kernels_epilogue_butterfly_h200_s11.log), its loads and stores strided
# by a group per thread; dropped. 32 rows x 128 / 8 warps: session 11's sweep (bench_kernels.py --graphs --epilogue, H200, 16384 x 4096): mask + inverse
# Hadamard-32 0.135 ms against 0.139 on 32 x 128 / 4 and 0.150-0.240 on larger or smaller tiles; alpha alone 0.098 on
# every tile (the copy's bandwidth: 6 bytes per element)
EPILOGUE_TILE = Tile(32, 128, 8)


def mask_rotate_cast(g: torch.Tensor, mask_bits: torch.Tensor | None, inverse_rotation: torch.Tensor | PreparedRotation | None, out_dtype: torch.dtype,
                     alpha: torch.Tensor | None = None, tile: Tile | None = None) -> torch.Tensor:
    """``((g * alpha * mask) @ blockdiag(M^T)).to(out_dtype)`` for fp32 ``g [R, K]``; ``inverse_rotation`` is ``M^T``
    (built on the CPU: no host sync), ``alpha`` a float32 scalar tensor on g's device. ``tile``: rows x up to
    ``block_k`` columns per program and its warps (default ``EPILOGUE_TILE``; benchmarks' sweeps)."""
    g = g.contiguous().float()
    r, k = g.shape
    g_size = rotation_size(inverse_rotation)
    tile = tile or EPILOGUE_TILE
    tile.check()
    block_k = tile.block_k if k % tile.block_k == 0 and tile.block_k >= g_size else max(g_size, 32)
    if k % block_k:
        raise ValueError(f"epilogue kernel: K={k} is not a multiple of {block_k}")
    out = torch.empty(r, k, dtype=out_dtype, device=g.device)
    h, rot_scale = device_rotation(inverse_rotation, g.device)
    mask = mask_bits.contiguous() if mask_bits is not None else placeholder(torch.uint8, g.device)
    alpha_t = alpha.reshape(1).float() if alpha is not None else h
    epilogue_kernel[(triton.cdiv(r, tile.block_r), k // block_k)](
        g, alpha_t, mask, h, rot_scale, out, r, k, HAS_ALPHA=alpha is not None, HAS_MASK=mask_bits is not None, G=g_size, PRECISION=_precision(torch.float32, g.device),
        BLOCK_R=tile.block_r, BLOCK_K=block_k, num_warps=tile.num_warps, **tile.compile_options())
    return out
