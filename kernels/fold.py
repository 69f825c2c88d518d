"""Triton kernels that turn packed FP4 operands into what Hopper's tensor cores multiply, exactly.

* ``fold_mxfp4_fp8``: MXFP4 (codes + E8M0 scales) -> FP8 E4M3 values with one FP32 scale per row. Per row,
  E_r is the largest scale exponent of the groups holding a nonzero code with a scale above 2^-127; each group's values become
  ``q * 2^(e_g - E_r + 6)`` (exact in E4M3 while e_g >= E_r - 14; below that rounded to nearest and
  counted) and the row scale is ``2^(E_r - 6)``. Two passes over the row: the first reads codes and
  scales to find E_r, the second writes. One program per block of rows.
* ``block_values_bf16``: NVFP4 (codes + E4M3 scales) -> BF16 ``q * s8`` (exact: 6 significant bits at most), or
  MXFP4 (E8M0 scales) -> BF16 ``q * 2^e`` (exact): what the BF16 GEMM multiplies, and what the backward's
  re-quantization of a saved tensor reads.

Reference twins (plain PyTorch, table lookups): ``fp4compile.lowering.hopper_gemm.fold_mxfp4_fp8`` and
``nvfp4_to_bf16`` (MXFP4: ``QuantizedTensor.block_values()``); tests compare the bytes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fp4compile.kernels.rotate_quantize import _e2m1_value, _e4m3_from_byte, _e4m3_rn, _pow2

_NONE = tl.constexpr(-1000)  # "no live group" marker for the row maximum


@triton.jit
def _unpack(codes):
    """uint8 [BM, BK/2] packed codes -> (|E2M1 value| float32 [BM, BK], sign bit int32 [BM, BK]).

    Element 2i comes from the low nibble. The sign is kept apart as a bit: negating a zero in float
    arithmetic may give +0 under the compiler's no-signed-zeros rules, and -0 must stay -0.
    """
    c = codes.to(tl.int32)
    pair = tl.join(c & 0xF, (c >> 4) & 0xF)  # [BM, BK/2, 2]
    code = tl.reshape(pair, (pair.shape[0], pair.shape[1] * 2))
    return _e2m1_value(code & 7), (code >> 3) & 1


@triton.jit
def _with_sign(mag, sign):
    return (mag.to(tl.int32, bitcast=True) | (sign << 31)).to(tl.float32, bitcast=True)


@triton.jit
def fold_kernel(codes_ptr, scales_ptr, out_ptr, er_ptr, count_ptr, M, K,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows[:, None] < M
    NG: tl.constexpr = BLOCK_K // GROUP
    # pass 1: E_r = max exponent over live groups (a nonzero code, a finite scale)
    e_r = tl.full((BLOCK_M,), _NONE, tl.int32)
    for k0 in range(0, K, BLOCK_K):
        cb = tl.load(codes_ptr + rows[:, None] * (K // 2) + (k0 // 2 + tl.arange(0, BLOCK_K // 2))[None, :], mask=row_ok, other=0)
        sb = tl.load(scales_ptr + rows[:, None] * (K // GROUP) + (k0 // GROUP + tl.arange(0, NG))[None, :], mask=row_ok, other=0).to(tl.int32)
        live = tl.max(tl.reshape(((cb.to(tl.int32) & 0x77) != 0).to(tl.int32), (BLOCK_M, NG, GROUP // 2)), axis=2) > 0
        live = live & (sb != 255) & (sb != 0)
        e_r = tl.maximum(e_r, tl.max(tl.where(live, sb - 127, _NONE), axis=1))
    e_r = tl.where(e_r == _NONE, 6, e_r)  # a row of zeros: row scale 1
    tl.store(er_ptr + rows, e_r, mask=rows < M)
    # pass 2: a8 = q * 2^(e_g - E_r + 6), shift clamped to [-13, 6] (below -13 every value rounds to 0)
    unfoldable = tl.zeros((BLOCK_M,), tl.int32)
    for k0 in range(0, K, BLOCK_K):
        cb = tl.load(codes_ptr + rows[:, None] * (K // 2) + (k0 // 2 + tl.arange(0, BLOCK_K // 2))[None, :], mask=row_ok, other=0)
        sb = tl.load(scales_ptr + rows[:, None] * (K // GROUP) + (k0 // GROUP + tl.arange(0, NG))[None, :], mask=row_ok, other=0).to(tl.int32)
        nonzero = tl.max(tl.reshape(((cb.to(tl.int32) & 0x77) != 0).to(tl.int32), (BLOCK_M, NG, GROUP // 2)), axis=2) > 0
        nonzero = nonzero & (sb != 255)
        e_g = sb - 127
        unfoldable += tl.sum((nonzero & (e_g < e_r[:, None] - 14)).to(tl.int32), axis=1)
        shift = tl.minimum(tl.maximum(e_g - e_r[:, None] + 6, -13), 6)
        mag, sign = _unpack(cb)
        v = tl.reshape(mag, (BLOCK_M, NG, GROUP)) * _pow2(shift)[:, :, None]
        _, byte = _e4m3_rn(v)
        byte = byte | (tl.reshape(sign, (BLOCK_M, NG, GROUP)) << 7)  # the sign bit, -0 included
        byte = tl.where((sb == 255)[:, :, None], 0x7F, byte)
        cols = k0 + tl.arange(0, BLOCK_K)
        tl.store(out_ptr + rows[:, None] * K + cols[None, :], tl.reshape(byte, (BLOCK_M, BLOCK_K)).to(tl.uint8), mask=row_ok)
    tl.atomic_add(count_ptr, tl.sum(unfoldable, axis=0))


@triton.jit
def bf16_values_kernel(codes_ptr, scales_ptr, out_ptr, M, K, E8M0: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows[:, None] < M
    NG: tl.constexpr = BLOCK_K // GROUP
    k0 = pid_k * BLOCK_K
    cb = tl.load(codes_ptr + rows[:, None] * (K // 2) + (k0 // 2 + tl.arange(0, BLOCK_K // 2))[None, :], mask=row_ok, other=0)
    sb = tl.load(scales_ptr + rows[:, None] * (K // GROUP) + (k0 // GROUP + tl.arange(0, NG))[None, :], mask=row_ok, other=0).to(tl.int32)
    if E8M0:
        s = tl.where(sb == 255, float("nan"), _pow2(sb - 127))
    else:
        s = tl.where((sb & 0x7F) == 0x7F, float("nan"), _e4m3_from_byte(sb & 0x7F))  # scales are non-negative
    mag, sign = _unpack(cb)
    v = tl.reshape(mag, (BLOCK_M, NG, GROUP)) * s[:, :, None]
    v = _with_sign(tl.reshape(v, (BLOCK_M, BLOCK_K)), sign)
    cols = k0 + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + rows[:, None] * K + cols[None, :], v.to(tl.bfloat16), mask=row_ok)


def _block_k(k: int) -> int:
    for b in (256, 128, 64, 32):
        if k % b == 0:
            return b
    raise ValueError(f"fold kernels need K to be a multiple of 32, got {k}")


def fold_mxfp4_fp8(codes: torch.Tensor, scales: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes u8 [M, K/2], E8M0 scales u8 [M, K/32] -> (a8 e4m3 [M, K], E_r int32 [M, 1], unfoldable count int32 [1])."""
    m, k = codes.shape[0], codes.shape[1] * 2
    out = torch.empty(m, k, dtype=torch.uint8, device=codes.device)
    e_r = torch.empty(m, dtype=torch.int32, device=codes.device)
    count = torch.zeros(1, dtype=torch.int32, device=codes.device)
    block_m = 32
    fold_kernel[(triton.cdiv(m, block_m),)](codes.contiguous(), scales.contiguous(), out, e_r, count, m, k,
                                            BLOCK_M=block_m, BLOCK_K=_block_k(k), GROUP=group_size)
    return out.view(torch.float8_e4m3fn), e_r.reshape(m, 1), count


def block_values_bf16(codes: torch.Tensor, scales: torch.Tensor, group_size: int, *, e8m0: bool) -> torch.Tensor:
    """codes u8 [..., K/2] + scales u8 [..., K/group] -> bf16 [..., K] = e2m1 * scale, exactly.

    NVFP4 (E4M3 scales): ``q * s8`` has at most 6 significant bits; MXFP4 (E8M0): ``q * 2^e`` with e in
    [-127, 127], inside BF16's range. The tensor scale and factor are not applied. A NaN scale gives a NaN group.
    """
    c2 = codes.reshape(-1, codes.shape[-1]).contiguous()
    m, k = c2.shape[0], c2.shape[1] * 2
    out = torch.empty(m, k, dtype=torch.bfloat16, device=codes.device)
    block_m, block_k = 32, _block_k(k)
    bf16_values_kernel[(triton.cdiv(m, block_m), k // block_k)](c2, scales.reshape(m, -1).contiguous(), out, m, k, E8M0=e8m0,
                                                               BLOCK_M=block_m, BLOCK_K=block_k, GROUP=group_size)
    return out.reshape(*codes.shape[:-1], k)
