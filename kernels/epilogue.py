"""The GEMMs' epilogue in one pass: alpha, trust mask, inverse forward rotation, cast.

Quartet's gradients come out of the GEMM in the forward's rotated domain (``[R, K]``, BF16 for a BF16 gradient, else
fp32); the reference
(``fp4compile.lowering.triton_ops._finish`` / ``fp4compile.reference.linear._finish_grad``) then does

    g = g * alpha         # tensor scales and factors of an exact-product (BF16) GEMM, when it has any
    g = g * mask          # QuEST straight-through estimator: clipped elements get no gradient
    g = g @ blockdiag(M)^T  # undo the forward Hadamard along K
    g = g.to(out_dtype)

as three or four passes over the tensor. These kernels read ``g`` and the mask bits once and write
the result once. ``epilogue_kernel`` rotates by a small matmul (``tl.dot``) of +-1 entries scaled after
accumulation, as in the reference, so only the FP32 summation order differs; for the fixed Hadamard-32 (Quartet's
forward rotation) ``epilogue_h32_kernel`` rotates by its butterfly in registers instead, 0.114 ms against 0.134 at
16384 x 4096 on an H200 (session 11; docs/bench_logs/bench_kernels_epilogue_butterfly_joined_h200_s11.log).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fp4compile.kernels.rotate_quantize import (
    _NO_FMA,
    PreparedRotation,
    Tile,
    _precision,
    _rotate,
    _rotation_matrix,
    check_elements,
    device_rotation,
    is_fixed_hadamard,
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
    g = tl.load(g_ptr + rows[:, None] * K + ks[None, :], mask=ok, other=0.0).to(tl.float32)
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


# The matmul kernel's tile, 32 rows x 128 / 8 warps: session 11's sweep (bench_kernels.py --graphs --epilogue, H200, 16384 x 4096): mask + inverse
# Hadamard-32 0.135 ms against 0.139 on 32 x 128 / 4 and 0.150-0.240 on larger or smaller tiles; alpha alone 0.098 on
# every tile (the copy's bandwidth: 6 bytes per element)
EPILOGUE_TILE = Tile(32, 128, 8)


@triton.jit
def _h4(x, P: tl.constexpr):
    """x [P, 4] -> x @ H_4 (Sylvester, unnormalised) along the last axis, in registers: the axis is split into its
    index bits (bit 0 fastest) and each bit's butterfly (a, b) -> (a + b, a - b) is elementwise on the halves."""
    e0, e1 = tl.split(tl.reshape(x, (P, 2, 2)))  # bit 0 = 0 / 1, each [P, 2] indexed by bit 1
    p, q = e0 + e1, e0 - e1
    p0, p1 = tl.split(p)
    q0, q1 = tl.split(q)
    return tl.reshape(tl.join(tl.join(p0 + p1, p0 - p1), tl.join(q0 + q1, q0 - q1)), (P, 4))


@triton.jit
def _masked_chunk(g_ptr, m, c: tl.constexpr, HAS_MASK: tl.constexpr):
    """Columns 4c .. 4c + 3 of each (row, group) as float32 [P, 4], times their trust-mask bits (m: the group's 32 bits)."""
    j = tl.arange(0, 4)
    x = tl.load(g_ptr + 4 * c + j[None, :]).to(tl.float32)
    if HAS_MASK:
        x = x * ((m[:, None] >> (4 * c + j[None, :])) & 1).to(tl.float32)
    return x


@triton.jit
def epilogue_h32_kernel(g_ptr, alpha_ptr, mask_ptr, rot_scale, out_ptr, R, K,
                        HAS_ALPHA: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_P: tl.constexpr):
    """``epilogue_kernel`` for the fixed Sylvester Hadamard-32 (Quartet's forward rotation): its inverse (H itself) as a
    butterfly in registers. Each thread owns whole 32-column groups (BLOCK_P (row, group) pairs per program, the
    groups of a row on consecutive threads), loaded as eight 16-byte chunks: the butterfly's stages over column bits
    2-4 are elementwise between chunks, bits 0-1 inside a chunk (``_h4``); the group's 32 results are joined and
    stored at once (64 contiguous bytes per thread: storing each chunk on its own, 8 bytes per thread 64 bytes apart
    across the warp, made the kernel 0.218 ms against 0.114). 5 adds per element instead of a tensor-core matmul and
    its layout conversions through shared memory (17 static instructions per element against 32). The sums run in
    another order than the matmul's (FP32 rounding in the last bits, as any two rotations' here)."""
    pairs = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    groups = K // 32
    ok = pairs < R * groups
    pairs = tl.where(ok, pairs, 0)  # out-of-range pairs read (row 0, group 0) and store nothing
    row = pairs // groups
    base = g_ptr + row * K + (pairs % groups) * 32
    m = tl.load(mask_ptr + pairs, mask=ok, other=0) if HAS_MASK else pairs  # a group's 32 mask bits: one int32
    x0 = _masked_chunk(base[:, None], m, 0, HAS_MASK)
    x1 = _masked_chunk(base[:, None], m, 1, HAS_MASK)
    x2 = _masked_chunk(base[:, None], m, 2, HAS_MASK)
    x3 = _masked_chunk(base[:, None], m, 3, HAS_MASK)
    x4 = _masked_chunk(base[:, None], m, 4, HAS_MASK)
    x5 = _masked_chunk(base[:, None], m, 5, HAS_MASK)
    x6 = _masked_chunk(base[:, None], m, 6, HAS_MASK)
    x7 = _masked_chunk(base[:, None], m, 7, HAS_MASK)
    if HAS_ALPHA:  # alpha before the rotation, as the reference: ((g * alpha) * mask) @ H
        a = tl.load(alpha_ptr)
        x0, x1, x2, x3, x4, x5, x6, x7 = x0 * a, x1 * a, x2 * a, x3 * a, x4 * a, x5 * a, x6 * a, x7 * a
    # column bit 4 (chunks c, c + 4), bit 3 (c, c + 2), bit 2 (c, c + 1)
    x0, x4 = x0 + x4, x0 - x4
    x1, x5 = x1 + x5, x1 - x5
    x2, x6 = x2 + x6, x2 - x6
    x3, x7 = x3 + x7, x3 - x7
    x0, x2 = x0 + x2, x0 - x2
    x1, x3 = x1 + x3, x1 - x3
    x4, x6 = x4 + x6, x4 - x6
    x5, x7 = x5 + x7, x5 - x7
    x0, x1 = x0 + x1, x0 - x1
    x2, x3 = x2 + x3, x2 - x3
    x4, x5 = x4 + x5, x4 - x5
    x6, x7 = x6 + x7, x6 - x7
    # the group's 32 results as one [P, 32] tensor (chunk c at columns 4c .. 4c + 3), stored at once
    y = tl.join(tl.join(tl.join(_h4(x0, BLOCK_P), _h4(x1, BLOCK_P)), tl.join(_h4(x2, BLOCK_P), _h4(x3, BLOCK_P))),
                tl.join(tl.join(_h4(x4, BLOCK_P), _h4(x5, BLOCK_P)), tl.join(_h4(x6, BLOCK_P), _h4(x7, BLOCK_P))))  # [P, 4, 2, 2, 2]
    y = tl.reshape(tl.permute(y, (0, 4, 3, 2, 1)), (BLOCK_P, 32)) * rot_scale  # chunk index bits (c2 c1 c0) -> columns 16 c2 + 8 c1 + 4 c0
    cols = (row * K + (pairs % groups) * 32)[:, None] + tl.arange(0, 32)[None, :]
    tl.store(out_ptr + cols, y.to(out_ptr.dtype.element_ty), mask=ok[:, None])


BUTTERFLY_PAIRS, BUTTERFLY_WARPS = 128, 4  # (row, group) pairs per program of epilogue_h32_kernel: one per thread


def mask_rotate_cast(g: torch.Tensor, mask_bits: torch.Tensor | None, inverse_rotation: torch.Tensor | PreparedRotation | None, out_dtype: torch.dtype,
                     alpha: torch.Tensor | None = None, tile: Tile | None = None) -> torch.Tensor:
    """``((g * alpha * mask) @ blockdiag(M^T)).to(out_dtype)`` for ``g [R, K]`` (float32, or the BF16 a backward GEMM writes:
    ``reference.linear.grad_gemm_dtype``; read as it is, computed in float32); ``inverse_rotation`` is ``M^T``
    (built on the CPU: no host sync), ``alpha`` a float32 scalar tensor on g's device. ``tile``: rows x up to
    ``block_k`` columns per program and its warps (default ``EPILOGUE_TILE``; benchmarks' sweeps)."""
    r, k = g.shape
    check_elements(r * k, f"GEMM epilogue [{r}, {k}]")
    g = g.contiguous() if g.dtype in (torch.float32, torch.bfloat16) else g.contiguous().float()
    g_size = rotation_size(inverse_rotation)
    if tile is None and is_fixed_hadamard(inverse_rotation) and g_size == 32 and k % 32 == 0:
        out = torch.empty(r, k, dtype=out_dtype, device=g.device)
        mask = mask_bits.contiguous().view(torch.int32) if mask_bits is not None else placeholder(torch.int32, g.device)
        alpha_t = alpha.reshape(1).float() if alpha is not None else g
        n = r * (k // 32)
        epilogue_h32_kernel[(triton.cdiv(n, BUTTERFLY_PAIRS),)](
            g, alpha_t, mask, inverse_rotation.scale, out, r, k, HAS_ALPHA=alpha is not None, HAS_MASK=mask_bits is not None,
            BLOCK_P=BUTTERFLY_PAIRS, num_warps=BUTTERFLY_WARPS, **_NO_FMA)
        return out
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
