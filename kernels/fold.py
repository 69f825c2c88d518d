"""Triton kernels that turn packed FP4 operands into what Hopper's tensor cores multiply, exactly.

* ``fold_mxfp4_fp8``: MXFP4 (codes + E8M0 scales) -> FP8 E4M3 values with one FP32 scale per row. Per row,
  E_r is the largest scale exponent of the groups holding a nonzero code with a scale above 2^-127; each group's values become
  ``q * 2^(e_g - E_r + 6)`` (exact in E4M3 while e_g >= E_r - 14; below that rounded to nearest and
  counted) and the row scale is ``2^(E_r - 6)``. E_r comes from the quantize kernel, which finds it (an atomic
  maximum per row) while it writes the codes: the fold is then one pass over the packed codes (0.53 bytes read,
  1 written per element), 8-9 static SASS instructions per element against the 25 of the pre-pass over the input it
  replaced (``python -m fp4compile.kernels.instruction_count``).
* ``block_values_bf16``: NVFP4 (codes + E4M3 scales) -> BF16 ``q * s8`` (exact: 6 significant bits at most), or
  MXFP4 (E8M0 scales) -> BF16 ``q * 2^e`` (exact): what the BF16 GEMM multiplies (the backward's re-quantization of a
  saved tensor forms the same values in registers: ``rotate_quantize._load_tile``).

Reference twins (plain PyTorch, table lookups): ``fp4compile.lowering.hopper_gemm.fold_mxfp4_fp8`` and
``nvfp4_to_bf16`` (MXFP4: ``QuantizedTensor.block_values()``); tests compare the bytes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fp4compile.kernels.rotate_quantize import _INTERPRETED, _NO_ROW_EXP, _e2m1_value, _pow2, _scale_values, check_elements


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
def _prmt(a, b, sel):
    """PTX ``prmt.b32`` (default mode) on int32 words: byte i of the result is byte ``(sel >> 4i) & 7`` of the 8-byte
    value ``b:a`` (bytes 0-3 from a, 4-7 from b), for i = 0..3; the selectors' bit 3 must be clear. One instruction
    on the GPU: a lookup of four 3-bit indices in an 8-byte table. The CPU interpreter, which runs no PTX, takes
    the same bytes from integer shifts."""
    if _INTERPRETED:
        out = sel * 0
        for i in tl.static_range(4):
            idx = (sel >> (4 * i)) & 7
            word = tl.where(idx < 4, a, b)
            out = out | (((word >> (8 * (idx & 3))) & 0xFF) << (8 * i))
        return out
    return tl.inline_asm_elementwise("prmt.b32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, sel], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _e4m3_byte_of_fold(v):
    """E4M3 byte of v = q * 2^s >= 0 (q an E2M1 magnitude, s <= 6): exact where E4M3 holds v, RNE below.

    v has at most two significant bits, so in E4M3's normal range [2^-6, 448] its FP32 bits shifted right by
    20 are the E4M3 byte plus (127 - 7) << 3. Below 2^-6, adding 1.5 * 2^14 (FP32 quantum 2^-9, E4M3's
    subnormal step) rounds v to nearest-even on that grid and leaves the byte in the low bits.
    """
    small = (v + 24576.0).to(tl.int32, bitcast=True) - 0x46C00000
    normal = (v.to(tl.int32, bitcast=True) >> 20) - 960
    return tl.where(v < 0.015625, small, normal)


@triton.jit
def _fold_table(shift, nan):
    """Per group: the E4M3 bytes of ``q * 2^shift`` for the 8 E2M1 magnitudes q as two int32 words (magnitude code m
    is byte m of hi:lo), all 0x7F in a NaN group; shift in [-13, 6] (exact in E4M3 down to -5, RNE below)."""
    p = _pow2(shift)
    lo = (_e4m3_byte_of_fold(p * 0.5) << 8) | (_e4m3_byte_of_fold(p) << 16) | (_e4m3_byte_of_fold(p * 1.5) << 24)
    hi = (_e4m3_byte_of_fold(p * 2.0) | (_e4m3_byte_of_fold(p * 3.0) << 8) | (_e4m3_byte_of_fold(p * 4.0) << 16)
          | (_e4m3_byte_of_fold(p * 6.0) << 24))
    return tl.where(nan, 0x7F7F7F7F, lo), tl.where(nan, 0x7F7F7F7F, hi)


@triton.jit
def fold_kernel(codes_ptr, scales_ptr, er_ptr, out_ptr, rs_ptr, count_ptr, M, K,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    """One pass over a [BLOCK_M, BLOCK_K] tile, given each row's E_r (``er_ptr``: the quantize kernel's atomic
    maxima, ``_NO_ROW_EXP`` for a row without a live group):

        a8 = q * 2^(e_g - E_r + 6)   (E4M3 byte, the code's sign bit kept, 0x7F in a group with a NaN scale)
        row_scale = 2^(E_r - 6)      (written by the programs of the first K block)

    and the groups holding a nonzero code more than 14 binades below E_r added to ``count_ptr[0]``.

    Works on words: ``codes_ptr`` is read as int16 (4 codes each) and ``out_ptr`` written as int32 (4 bytes). Each
    group's 8 possible bytes form a table (``_fold_table``, once per group), so 4 elements take two ``prmt``s: one
    looks up the magnitudes, one places the sign bits (byte 0 or 1 of 0x8000). Integer arithmetic, not Triton's
    fp32 -> float8e4nv conversion, which returned the wrong element's byte for some layouts on sm_90 (Triton 3.6).
    """
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    NG: tl.constexpr = BLOCK_K // GROUP
    WORDS: tl.constexpr = BLOCK_K // 4
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows[:, None] < M
    e_r = tl.load(er_ptr + rows, mask=rows < M, other=_NO_ROW_EXP)
    e_r = tl.where(e_r == _NO_ROW_EXP, 6, e_r)  # a row without a live group: row scale 1
    sb = tl.load(scales_ptr + rows[:, None] * (K // GROUP) + (pid_k * NG + tl.arange(0, NG))[None, :], mask=row_ok, other=0).to(tl.int32)
    shift = tl.minimum(tl.maximum(sb - 127 - e_r[:, None] + 6, -13), 6)  # [BM, NG]; below -13 every value rounds to 0
    nan = sb == 255
    lo, hi = _fold_table(shift, nan)
    sgn = tl.where(nan, 0, 0x8000)  # byte 1 is the sign bit; none in a NaN group
    lo = tl.reshape(tl.broadcast_to(lo[:, :, None], (BLOCK_M, NG, GROUP // 4)), (BLOCK_M, WORDS))
    hi = tl.reshape(tl.broadcast_to(hi[:, :, None], (BLOCK_M, NG, GROUP // 4)), (BLOCK_M, WORDS))
    sgn = tl.reshape(tl.broadcast_to(sgn[:, :, None], (BLOCK_M, NG, GROUP // 4)), (BLOCK_M, WORDS))
    words = pid_k * WORDS + tl.arange(0, WORDS)
    w = tl.load(codes_ptr + rows[:, None] * (K // 4) + words[None, :], mask=row_ok, other=0).to(tl.int32) & 0xFFFF  # codes 4i..4i+3
    v = _prmt(lo, hi, w & 0x7777) | _prmt(sgn, 0, (w >> 3) & 0x1111)  # bytes 4i..4i+3 of a8
    tl.store(out_ptr + rows[:, None] * (K // 4) + words[None, :], v, mask=row_ok)
    far = ~nan & (sb - 127 < e_r[:, None] - 14)  # scale byte 0 (2^-127) included: its nonzero values fold to 0
    if tl.max(tl.max(far.to(tl.int32), axis=1), axis=0) > 0:  # rare (or all-zero groups): count the far groups holding a nonzero code
        nonzero = tl.max(tl.reshape(((w & 0x7777) != 0).to(tl.int32), (BLOCK_M, NG, GROUP // 4)), axis=2) > 0
        unfoldable = tl.sum(tl.sum((far & nonzero & row_ok).to(tl.int32), axis=1), axis=0)
        if unfoldable > 0:
            tl.atomic_add(count_ptr, unfoldable.to(count_ptr.dtype.element_ty))
    if pid_k == 0:
        tl.store(rs_ptr + rows, _pow2(e_r - 6), mask=rows < M)


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
    s = _scale_values(sb, E8M0)
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


def fold_tile(k: int) -> tuple[int, int, int]:
    """The fold's tile (rows, elements, warps) for rows of k elements: 32 x 512 / 8 warps where 512 divides k, else 32 x the
    largest of 256 / 128 / 64 / 32 dividing k / 4 warps. Session 13's sweep (``bench_kernels.py --graphs --fold``, H200,
    32768 rows): 32 x 512 / 8 took 0.183 ms against 0.197 for 32 x 256 / 4 at k = 11264, 0.032 against 0.035 at k = 2048
    (2.9 -> 3.1-3.2 TB/s); twelve tiles within 0.183-0.219 ms."""
    return (32, 512, 8) if k % 512 == 0 else (32, _block_k(k), 4)


def fold_mxfp4_fp8(codes: torch.Tensor, scales: torch.Tensor, row_exponents: torch.Tensor | None = None, *, group_size: int = 32,
                   counter: torch.Tensor | None = None, tile: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """codes u8 [M, K/2], E8M0 scales u8 [M, K/32] -> (a8 e4m3 [M, K], row_scale f32 [M, 1]), in one launch.

    ``row_exponents`` (int32 [M]): each row's E_r, ``-1000`` for a row without a live group; the quantize kernel
    finds them as it writes the codes (``quantize_for_gemm``). Without them they are computed here from the codes
    by the torch twin's ``hopper_gemm.row_exponents``. The unfoldable groups are added to ``counter`` (int64 [1];
    default: the device's fold counter, ``hopper_gemm.fold_stats``). ``tile`` (rows, elements, warps) overrides
    :func:`fold_tile` (benchmarks' sweeps).
    """
    m, k = codes.shape[0], codes.shape[1] * 2
    check_elements(m * k, f"FP8 fold [{m}, {k}]")
    if row_exponents is None:
        from fp4compile.lowering.hopper_gemm import row_exponents as twin_row_exponents

        row_exponents = twin_row_exponents(codes, scales, group_size).to(torch.int32).reshape(m)
    if counter is None:
        from fp4compile.lowering.hopper_gemm import unfoldable_counter

        counter = unfoldable_counter(codes.device)
    out = torch.empty(m, k, dtype=torch.uint8, device=codes.device)
    row_scale = torch.empty(m, 1, dtype=torch.float32, device=codes.device)
    block_m, block_k, warps = tile if tile is not None else fold_tile(k)
    if k % block_k or block_k % group_size:
        raise ValueError(f"FP8 fold: a tile of {block_k} elements must divide K = {k} and be a multiple of the group size {group_size}")
    fold_kernel[(triton.cdiv(m, block_m), k // block_k)](codes.contiguous().view(torch.int16), scales.contiguous(), row_exponents, out.view(torch.int32), row_scale, counter, m, k,
                                                         BLOCK_M=block_m, BLOCK_K=block_k, GROUP=group_size, num_warps=warps)
    return out.view(torch.float8_e4m3fn), row_scale


def block_values_bf16(codes: torch.Tensor, scales: torch.Tensor, group_size: int, *, e8m0: bool) -> torch.Tensor:
    """codes u8 [..., K/2] + scales u8 [..., K/group] -> bf16 [..., K] = e2m1 * scale, exactly.

    NVFP4 (E4M3 scales): ``q * s8`` has at most 6 significant bits; MXFP4 (E8M0): ``q * 2^e`` with e in
    [-127, 127], inside BF16's range. The tensor scale and factor are not applied. A NaN scale gives a NaN group.
    """
    m, k = codes.numel() // max(codes.shape[-1], 1), codes.shape[-1] * 2
    check_elements(m * k, f"block values [{m}, {k}]")
    c2 = codes.reshape(-1, codes.shape[-1]).contiguous()
    out = torch.empty(m, k, dtype=torch.bfloat16, device=codes.device)
    block_m, block_k = 32, _block_k(k)
    bf16_values_kernel[(triton.cdiv(m, block_m), k // block_k)](c2, scales.reshape(m, -1).contiguous(), out, m, k, E8M0=e8m0,
                                                               BLOCK_M=block_m, BLOCK_K=block_k, GROUP=group_size)
    return out.reshape(*codes.shape[:-1], k)
