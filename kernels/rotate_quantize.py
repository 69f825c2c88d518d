"""Fused rotate-quantize Triton kernels: one pass over the input per quantization.

Each program takes a tile of ``BLOCK_R`` output rows x ``BLOCK_K`` elements along the quantization axis
(a multiple of the rotation size G, the scale group and 8) and does, in registers:

1. load the tile from a tensor with any strides (so ``X^T`` along T is read from ``X`` without
   materialising the transpose). The backward's re-quantization of the forward-quantized W and X reads
   their packed codes and scale bytes transposed and forms their exact block values in registers;
2. rotate along the axis by a G x G matrix ``M`` (fixed or random-sign Hadamard, formed on the device from
   the seed by ``prepare_rotation``, with the reference's signs) as a small matmul (``tl.dot``), then, for a
   re-quantization, multiply by the saved tensor's scale and factor (its dequantized value, rotated);
3. compute the group scales and round: MXFP4 rules OCP / QuEST (with trust mask) / Tseng 3/4 (RTN or
   SR), NVFP4 rules RTN (any val_max) / 4-over-6 / SR / MS-EDEN (per-group correction and stochastic
   rounding of the corrected E4M3 scale). NVFP4's FP32 tensor scale comes from a first pass over the
   (rotated) input (``stats_kernel``: its amax);
4. write what the consumers need (the lowering's layout plan decides): packed E2M1 codes ``[R, K/2]``, scale
   bytes ``[R, K/group]`` and mask bits ``[R, K/8]`` (kept for the backward), and/or the GEMM-ready values
   ``[R, K]``: NVFP4 as exact BF16 (hopper.md); MXFP4 folded into FP8 with an FP32 scale per row, which needs
   each row's largest scale exponent before any value is written: the kernel writes the packed codes and
   finds those exponents (an atomic max per row), and a second, light pass over the codes (kernels/fold.py)
   writes the FP8 values.

The kernels are bound by instruction issue, not memory (Nsight Compute, docs/perf_notes.md), so the
arithmetic is written for few instructions (``python -m fp4compile.kernels.instruction_count`` counts
them) while computing the reference's FP32 results exactly: rounding onto the E2M1 grid by one add of a
magic number, codes and E4M3 bytes from FP32 bits, division by a power-of-two scale as multiplication by its
exact reciprocal, division by an NVFP4 group's scale as one IEEE reciprocal per group and Markstein's FMA
correction per element (``_div_by``: correctly rounded), other divisions IEEE (``div_rn``; Triton's float32
``/`` is not). Per-group work is done once per group where the rotation's layout would repeat it on the 4
threads that share a group (NVFP4 after a rotation: ``_to_group_per_thread``). So codes and scales
match the reference bit for bit for non-rotating deterministic rules; with a rotation the FP32 sums of the matmul may differ from the
reference's in the last bit, which flips a code only when a value sits on a rounding boundary (tests
measure the rate). Stochastic rounding draws the reference's counter-based uniforms (``seeds.uniforms``: a
32-bit hash of seed and element index, formed in registers; the seed is read from a device tensor, so
CUDA-graph replays draw new ones), or reads given uniforms from a tensor (tests).

Reference twins: ``fp4compile.reference.mxfp4`` and ``fp4compile.reference.nvfp4``.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from fp4compile import seeds

# Rules (constexpr RULE); kernels may only read globals that are tl.constexpr
MX_OCP, MX_QUEST, MX_TSENG = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
NV_RTN, NV_4OVER6, NV_EDEN, NV_RTN16 = tl.constexpr(10), tl.constexpr(11), tl.constexpr(12), tl.constexpr(13)

_NO_ROW_EXP = tl.constexpr(-1000)  # "no live group" marker of the row exponents (read by kernels/fold.py)
_SCALE_SALT = tl.constexpr(seeds.SCALE_SALT)  # the key of MS-EDEN's scale draws is seed ^ SCALE_SALT
_INV6 = tl.constexpr(0.16666667163372040)  # RN_float32(1 / 6), for _div_by(v, 6.0, _INV6)
_MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2^23: (v + MAGIC) - MAGIC rounds |v| < 2^22 to the nearest integer, ties to even
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRETED = tl.constexpr(INTERPRETED)  # Triton's CPU interpreter runs no inline PTX


@triton.jit
def _div(a, b):
    """a / b correctly rounded, as the reference's division (Triton's ``/`` on float32 is ``div.full``: 2 ulp)."""
    return tl.math.div_rn(a, b)


@triton.jit
def _div_by(x, d, r):
    """x / d correctly rounded (as ``_div``) given r = RN(1 / d), for d > 0 shared by many x: one IEEE division
    per group instead of one per element.

    Markstein's correction: q0 = RN(x r) is within an ulp of x / d, so the residual x - q0 d is exact in one
    FMA and RN(q0 + residual * r) is RN(x / d) (Handbook of Floating-Point Arithmetic, Markstein's theorem;
    checked on 4e7 random pairs against IEEE division, all-ones significands included). Quotients in the
    subnormal range may differ in the last bit (they round to code 0 either way). The correction turns
    -0 / d into +0, so x's sign bit is put back (one LOP3: the other signs already agree).
    """
    q0 = x * r
    q = tl.fma(tl.fma(-q0, d, x), r, q0)
    return (q.to(tl.int32, bitcast=True) | (x.to(tl.int32, bitcast=True) & -2147483648)).to(tl.float32, bitcast=True)


@triton.jit
def _rne(v):
    return (v + _MAGIC) - _MAGIC


@triton.jit
def _rtn_code(mag):
    """mag in [0, 6] -> (E2M1 magnitude code 0..7 as int32, its value as float32), nearest, ties to the even code.

    One add of a magic number whose FP32 quantum is the E2M1 grid's step where mag lies (0.5 below 2, 1
    below 4, 2 up to 6): ``magic = 1.5 * 2^(m - 105)``, m = max(mag's biased exponent, 127). The FPU's
    round-to-nearest-even does the rounding (an even multiple of the step is an even code, as the
    reference's RNE(2 mag) / 2, RNE(mag), 2 RNE(mag / 2)); the integer difference of the sum's bits and the
    magic's counts steps: the code, less 0, 2 or 4 on the three sub-grids. (NaN only arises in groups whose
    codes ``_signed_codes`` overrides.)
    """
    m = tl.maximum(mag.to(tl.int32, bitcast=True) >> 23, 127)
    magic_bits = m * 8388608 + 0x0B400000  # ((m + 22) << 23) | 0x400000: 1.5 * 2^22, 2^23, 2^24
    magic = magic_bits.to(tl.float32, bitcast=True)
    y = mag + magic
    return y.to(tl.int32, bitcast=True) - magic_bits + (m - 127) * 2, y - magic


@triton.jit
def _e2m1_value(c):
    """E2M1 magnitude code 0..7 -> its value as float32: code 2e + m >= 2 is 2^(e-1) (1 + m/2), from bits; 1 -> 0.5, 0 -> 0."""
    bits = (((c >> 1) + 126) << 23) | ((c & 1) << 22)
    return tl.where(c >= 2, bits.to(tl.float32, bitcast=True), c.to(tl.float32) * 0.5)


@triton.jit
def _sr_code(mag, u):
    """Stochastic rounding of mag in [0, 6] between its two E2M1 neighbours lo <= mag <= hi, up when u < p with
    p = (mag - lo) / (hi - lo): (magnitude code 0..7 as int32, its value as float32).

    The grid's step where mag lies is 2^(m - 128) for m = max(mag's biased exponent, 127) (0.5 below 2, 1 below 4,
    2 up to 6), so with s = mag / step (exact: a power of two) lo = floor(s) * step and p = s - floor(s), both
    exact: the reference's p, whose subtraction and division by hi - lo are exact too. At mag = 6, p = 0. The
    code is read off the rounded value's bits (on the grid, 1 -> 2, 1.5 -> 3, 2 -> 4, 3 -> 5, 4 -> 6, 6 -> 7 are
    ``(bits >> 22) - 252``; 0.5 -> 1 and 0 -> 0 apart): fewer live registers than carrying an integer count.
    """
    m = tl.maximum(mag.to(tl.int32, bitcast=True) >> 23, 127)
    s = mag * ((255 - m) << 23).to(tl.float32, bitcast=True)  # mag / step: times 2^(128 - m)
    t = tl.floor(s)
    q = (t + tl.where(u < s - t, 1.0, 0.0)) * ((m - 1) << 23).to(tl.float32, bitcast=True)  # rounded steps times the step
    c = tl.maximum((q.to(tl.int32, bitcast=True) >> 22) - 252, 0)
    return tl.where(q == 0.5, 1, c), q


@triton.jit
def _uniform(key, index):
    """``seeds.uniforms``' draw for element ``index`` under ``key`` (< 2^31): ``(hash32(key, index) >> 8) / 2^24``.

    The same multiply-xorshift as ``seeds.hash32``, in uint32 arithmetic (wrapping = its ``& (2^32 - 1)``).
    """
    x = index.to(tl.uint32) * 0x9E3779B1 + key.to(tl.uint32)
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x346CA68B
    x = x ^ (x >> 16)
    return (x >> 8).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def _round(mag, u_ptr, elem, in_bounds, seed, SR: tl.constexpr, HAS_U: tl.constexpr):
    """(E2M1 magnitude code, value) of mag: RTN, or SR with the given uniforms (HAS_U) or counter-based ones (seed, element)."""
    if SR:
        if HAS_U:
            u = tl.load(u_ptr + elem, mask=in_bounds, other=0.0)
        else:
            u = _uniform(seed, elem)
        return _sr_code(mag, u)
    return _rtn_code(mag)


@triton.jit
def _signed_codes(c, x, bad):
    """Magnitude code c, the sign of x, the group's Inf/NaN flag -> code 0..15 (int32).

    The sign is x's sign bit (-0 included). A group holding Inf or NaN has a NaN scale, so the reference's
    scaled values are all NaN: code +6 (7) throughout.
    """
    return tl.where(bad, 7, c | ((x.to(tl.int32, bitcast=True) >> 28) & 8))


@triton.jit
def _clamp_mag(v):
    """min(|v|, 6). NaN only arises in groups with Inf/NaN, whose codes ``_signed_codes`` overrides."""
    return tl.minimum(tl.abs(v), 6.0)


@triton.jit
def _exp_floor(v):
    """floor(log2 v) for positive normal float32 v, from the exponent bits (int32)."""
    return ((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def _pow2(e):
    """2^e as float32 for integer e in [-127, 127] (2^-127 is the FP32 subnormal 0x00400000)."""
    bits = tl.where(e <= -127, 0x00400000, (e + 127) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _e4m3_rn(v):
    """Non-negative float32 -> (E4M3 value as float32, byte): RNE, saturating at 448, NaN -> 0x7F.

    Done in integer/FP32 arithmetic rather than by an FP8 conversion (which Triton's CPU interpreter gets
    wrong when rounding carries into the next binade). With E = max(floor(log2 v), -6) the quantum is
    2^(E-3); q = RNE(v / 2^(E-3)) is in [0, 16] and byte = (E + 7) * 8 + q - 8 also covers the carry
    (q = 16) and the subnormals (E = -6, byte = q).
    """
    sat = tl.minimum(v, 448.0)
    e = tl.maximum(_exp_floor(sat), -6)
    q = _rne(sat * _pow2(3 - e))
    byte = (e + 7) * 8 + q.to(tl.int32) - 8
    value = q * _pow2(e - 3)
    nan = v != v
    return tl.where(nan, float("nan"), value), tl.where(nan, 0x7F, byte)


@triton.jit
def _e4m3_from_byte(b):
    """E4M3 byte (non-negative) -> float32, in integer arithmetic; 0x7F -> NaN."""
    b = b.to(tl.int32)
    e_bits = b >> 3
    m = (b & 7).to(tl.float32)
    value = tl.where(e_bits == 0, m * 0.001953125, (8.0 + m) * _pow2(e_bits - 10))
    return tl.where(b == 0x7F, float("nan"), value)


@triton.jit
def _mx_exponent(xg, amax, RULE: tl.constexpr, GROUP: tl.constexpr):
    """E8M0 scale exponent of each group of xg [BLOCK_R, NG, GROUP] (amax [BLOCK_R, NG]), clamped to [-127, 127].

    QuEST: power-of-two floor of 0.48708 * std (+ 1e-8 relative); OCP and Tseng: floor(log2 amax) - 2.
    """
    if RULE == MX_QUEST:
        p_exp = tl.minimum(tl.maximum(_exp_floor(amax), -127), 127)
        p = tl.where(amax > 0, _pow2(p_exp), 0.0)
        xn = xg * _pow2(-p_exp)[:, :, None]  # x / p, exactly (p a power of two; an all-zero group stays zero)
        mean = tl.sum(xn, axis=2) / GROUP
        d = xn - mean[:, :, None]
        std = tl.sqrt(tl.sum(d * d, axis=2) / GROUP) * p
        s = 0.48707976 * std + 1e-8 * p
        e = tl.where(s > 0, _exp_floor(s), -127)
        e = tl.where(s < 1.1754943508222875e-38, -127, e)  # FP32 subnormal or zero -> byte 0
    else:
        e = _exp_floor(amax) - 2
        e = tl.where(amax < 1.1754943508222875e-38, -129, e)
    return tl.minimum(tl.maximum(e, -127), 127)


@triton.jit
def _group_stats(x, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    """x [BLOCK_R, BLOCK_K] -> (groups [BLOCK_R, NG, GROUP], amax [BLOCK_R, NG], bad [BLOCK_R, NG]: Inf or NaN inside)."""
    xg = tl.reshape(x, (BLOCK_R, BLOCK_K // GROUP, GROUP))
    # |x| as integer bits: ordered as the floats, with Inf and every NaN above the finite values, so one
    # integer max gives the group's amax and whether it holds Inf or NaN
    amax_bits = tl.max(xg.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=2)
    return xg, amax_bits.to(tl.float32, bitcast=True), amax_bits >= 0x7F800000


@triton.jit
def _rotation_matrix(h_ptr, G: tl.constexpr, PRECISION: tl.constexpr):
    """M / rot_scale [G, G] from h_ptr (bf16, entries exactly +-1) in the dot's input type; a scalar when G = 0 (unused).

    Loaded once per program: Hadamard-128's is 32 KB from L2, twice a 64 x 128 bf16 input tile's bytes, so
    programs that loop over several row blocks (ROW_ITERS) read it once for all of them.
    """
    if G > 0:
        offs = tl.arange(0, G)
        m = tl.load(h_ptr + offs[:, None] * G + offs[None, :])
        if PRECISION == "bf16":
            m = m.to(tl.bfloat16)
        else:
            m = m.to(tl.float32)
    else:
        m = tl.load(h_ptr).to(tl.float32)
    return m


@triton.jit
def _rotate(x, m, rot_scale, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, G: tl.constexpr, PRECISION: tl.constexpr):
    """x [BLOCK_R, BLOCK_K] -> x @ blockdiag(M) along the last axis, for m = M / rot_scale from ``_rotation_matrix``.

    The product is scaled by rot_scale (= the reference's float32 1/sqrt(G)) after the FP32 accumulation.
    """
    blocks = tl.reshape(x, (BLOCK_R * (BLOCK_K // G), G))
    if PRECISION == "bf16":
        out = tl.dot(blocks.to(tl.bfloat16), m, out_dtype=tl.float32)
    else:
        out = tl.dot(blocks, m, input_precision=PRECISION, out_dtype=tl.float32)
    return tl.reshape(out * rot_scale, (BLOCK_R, BLOCK_K))


@triton.jit
def _e2m1_signed_values(codes):
    """uint8 [BM, BK/2] packed codes -> their signed E2M1 values, float32 [BM, BK] (element 2i from the low nibble).

    E2M1's bits (s e1 e0 m) placed as the E4M3 byte ``s 0 0 e1 e0 m 0 0`` are the same number times 2^-6, subnormals
    (e = 0) and -0 included (both formats' exponent-0 encodings are subnormal), so the hardware's FP8 conversion
    decodes them, two per instruction, and one multiply by 64 (exact) restores the value.
    """
    lo, hi = _e4m3_of_codes(codes)
    b = tl.reshape(tl.join(lo, hi), (codes.shape[0], codes.shape[1] * 2))
    return b.to(tl.float8e4nv, bitcast=True).to(tl.float32) * 64.0


@triton.jit
def _e4m3_of_codes(codes):
    """uint8 packed codes -> (E4M3 bytes of the low nibbles, of the high nibbles), for ``_e2m1_signed_values``: on the GPU
    four bytes per 32-bit word (inline PTX; ptxas makes each line a LOP3), in the CPU interpreter the same bytes from
    integer arithmetic."""
    if _INTERPRETED:
        c = codes.to(tl.int32)
        return ((((c << 2) & 0x1C) | ((c << 4) & 0x80)).to(tl.uint8), (((c >> 2) & 0x1C) | (c & 0x80)).to(tl.uint8))
    return tl.inline_asm_elementwise(
        "{ .reg .b32 t; shl.b32 t, $2, 2; and.b32 t, t, 0x1C1C1C1C; shl.b32 $0, $2, 4; and.b32 $0, $0, 0x80808080; or.b32 $0, $0, t; "
        "shr.b32 t, $2, 2; and.b32 t, t, 0x1C1C1C1C; and.b32 $1, $2, 0x80808080; or.b32 $1, $1, t; }",
        "=r,=r,r", [codes], dtype=(tl.uint8, tl.uint8), is_pure=True, pack=4)


@triton.jit
def _scale_values(sb, E8M0: tl.constexpr):
    """Scale bytes (int32) -> float32: E8M0 ``2^(b - 127)`` (255: NaN), or non-negative E4M3 (0x7F: NaN)."""
    if E8M0:
        return tl.where(sb == 255, float("nan"), _pow2(sb - 127))
    return tl.where((sb & 0x7F) == 0x7F, float("nan"), _e4m3_from_byte(sb & 0x7F))


@triton.jit
def _load_tile(x_ptr, xs_ptr, stride_r, stride_k, alpha_ptr, row0, ks, R, K, m, rot_scale, G: tl.constexpr, PRECISION: tl.constexpr,
               SCALED: tl.constexpr, SRC_GROUP: tl.constexpr, TRANS_LOAD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """The [BLOCK_R, BLOCK_K] input tile of rows row0.. as float32, rotated along K by m (G > 0), times alpha_ptr[0] with
    SCALED; zero outside [R, K].

    Element (r, k) is at x_ptr + r*stride_r + k*stride_k. When r is the contiguous axis (TRANS_LOAD: X^T
    along T read from X) the tile is loaded in memory order as [BLOCK_K, BLOCK_R], so the loads are
    coalesced, and transposed in registers.

    SCALED (1: E8M0 scales, 2: E4M3) is the re-quantization of a saved FP4 tensor ``[K, R]``, read transposed from its
    packed codes (x_ptr, ``stride_k`` bytes per saved row) and scale bytes (xs_ptr, ``R / SRC_GROUP`` per row) as its
    exact block values ``e2m1 * scale`` (``kernels/fold.block_values_bf16``'s, without writing them), and alpha its
    tensor scale times factor, so the tile is its dequantized value ``(e2m1 * scale) * alpha`` as the reference's
    ``dequantize()``. The block values are exact in BF16, so they are rotated on BF16 tensor cores (exact products,
    FP32 sums) and alpha is applied after: the rotation's FP32 sums round differently from the reference's in the last
    bit, as every rotation's do.
    """
    if SCALED:
        kk = ks[:, None]
        NGS: tl.constexpr = BLOCK_R // SRC_GROUP
        pairs = row0 // 2 + tl.arange(0, BLOCK_R // 2)
        groups = row0 // SRC_GROUP + tl.arange(0, NGS)
        cb = tl.load(x_ptr + kk * stride_k + pairs[None, :], mask=(kk < K) & (pairs[None, :] < R // 2), other=0)  # [BLOCK_K, BLOCK_R/2]
        sb = tl.load(xs_ptr + kk * (R // SRC_GROUP) + groups[None, :], mask=(kk < K) & (groups[None, :] < R // SRC_GROUP), other=0).to(tl.int32)
        v = _e2m1_signed_values(cb)  # [BLOCK_K, BLOCK_R]
        v = tl.reshape(tl.reshape(v, (BLOCK_K, NGS, SRC_GROUP)) * _scale_values(sb, SCALED == 1)[:, :, None], (BLOCK_K, BLOCK_R))
        x = tl.trans(v)
    elif TRANS_LOAD:
        kk = ks[:, None]
        rr = row0 + tl.arange(0, BLOCK_R)[None, :]
        nat = tl.load(x_ptr + rr * stride_r + kk * stride_k, mask=(rr < R) & (kk < K), other=0.0).to(tl.float32)  # [BLOCK_K, BLOCK_R]
        x = tl.trans(nat)
    else:
        r2 = row0 + tl.arange(0, BLOCK_R)[:, None]
        k2 = ks[None, :]
        x = tl.load(x_ptr + r2 * stride_r + k2 * stride_k, mask=(r2 < R) & (k2 < K), other=0.0).to(tl.float32)
    if G > 0:
        x = _rotate(x, m, rot_scale, BLOCK_R, BLOCK_K, G, PRECISION)
    if SCALED:
        x = x * tl.load(alpha_ptr)
    return x


@triton.jit
def stats_kernel(
    x_ptr, xs_ptr, stride_r, stride_k, alpha_ptr, h_ptr, rot_scale, out_ptr, R, K,
    SCALED: tl.constexpr, SRC_GROUP: tl.constexpr, TRANS_LOAD: tl.constexpr,
    G: tl.constexpr, PRECISION: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, ROW_ITERS: tl.constexpr,
):
    """NVFP4's pre-pass: the largest finite |x| of the (rotated) input into out_ptr[0] (float32, pre-zeroed), by
    atomic max; the quantize kernel forms the tensor scale from it."""
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = _rotation_matrix(h_ptr, G, PRECISION)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    amax_run = 0.0  # this program's largest finite |x|
    for it in range(ROW_ITERS):  # row blocks pid_r * ROW_ITERS + it, sharing the rotation matrix
        row0 = (pid_r * ROW_ITERS + it) * BLOCK_R
        x = _load_tile(x_ptr, xs_ptr, stride_r, stride_k, alpha_ptr, row0, ks, R, K, m, rot_scale, G, PRECISION, SCALED, SRC_GROUP, TRANS_LOAD, BLOCK_R, BLOCK_K)
        a = tl.abs(x)
        finite = a < float("inf")  # False for Inf and NaN
        amax_run = tl.maximum(amax_run, tl.max(tl.max(tl.where(finite, a, 0.0), axis=1), axis=0))
    if amax_run > tl.load(out_ptr):  # the running maximum only grows: a program below the value read has nothing to add
        tl.atomic_max(out_ptr, amax_run)


@triton.jit
def _nv_group_scales(amax, s32, inv_s32, val_max, inv_val_max):
    """NVFP4 group scales from the groups' amax (Inf/NaN for a group holding one): (s8 as float32, its E4M3 byte,
    s8 * s32, RN(1 / (s8 * s32))). s8 = RN_E4M3(amax / val_max / s32), 0 -> 1.0; NaN for an Inf/NaN group."""
    vs, bs = _e4m3_rn(_div_by(_div_by(amax, val_max, inv_val_max), s32, inv_s32))
    vs = tl.where(amax < float("inf"), tl.where(bs == 0, 1.0, vs), float("nan"))
    bs = tl.where(bs == 0, 0x38, bs)
    ds = vs * s32
    return vs, bs, ds, _div(1.0, ds)


@triton.jit
def _to_group_per_thread(v, scratch_ptr, slot, pid_k, BLOCK_R: tl.constexpr, NG: tl.constexpr):
    """The tile's per-group values v [BLOCK_R, NG] as a 1-D [BLOCK_R * NG] tensor (row-major) laid out one group per thread.

    After a rotation's ``tl.dot`` every group is held by the 4 threads that hold its elements, and Triton keeps
    that layout for per-group work, which all 4 would then do. A round trip through this program's slice of
    ``scratch_ptr`` (3 x BLOCK_R x NG float32 per program, ``slot`` 0..2; L1/L2-resident) gives a layout of its own.
    """
    n: tl.constexpr = BLOCK_R * NG
    base = scratch_ptr + ((tl.program_id(0) * tl.num_programs(1) + pid_k) * 3 + slot) * n
    tl.store(base + tl.arange(0, BLOCK_R)[:, None] * NG + tl.arange(0, NG)[None, :], v)
    tl.debug_barrier()  # the block's stores are visible to all its threads
    out = tl.load(base + tl.arange(0, n))
    tl.debug_barrier()  # every thread has read before the slot is written again (the next use, the next row block)
    return out


@triton.jit
def _rotated_group_scales(amax, scratch_ptr, pid_k, s32, inv_s32, val_max, inv_val_max, BLOCK_R: tl.constexpr, NG: tl.constexpr):
    """``_nv_group_scales`` once per group (1-D results, row-major), for a rotated tile's layout (``_to_group_per_thread``)."""
    return _nv_group_scales(_to_group_per_thread(amax, scratch_ptr, 0, pid_k, BLOCK_R, NG), s32, inv_s32, val_max, inv_val_max)


@triton.jit
def _eden_scale_bytes(vs1, num, den, scratch_ptr, us_ptr, row_block, pid_k, R, out_stride, elem0, seed,
                      GROUP: tl.constexpr, HAS_U: tl.constexpr, BLOCK_R: tl.constexpr, NG: tl.constexpr):
    """MS-EDEN's corrected scale bytes ``SR_E4M3(s8 * <x, x> / <x, x_hat>)`` of the tile's BLOCK_R x NG groups, as a
    1-D [BLOCK_R * NG] tensor (row-major), given s8 (vs1, 1-D from ``_rotated_group_scales``) and each group's
    <x, x> (num) and <x, x_hat> (den) [BLOCK_R, NG]; each group's work (an IEEE division, two E4M3 roundings, a
    hash) done once (``_to_group_per_thread``).
    """
    i = tl.arange(0, BLOCK_R * NG)
    num1 = _to_group_per_thread(num, scratch_ptr, 1, pid_k, BLOCK_R, NG)
    den1 = _to_group_per_thread(den, scratch_ptr, 2, pid_k, BLOCK_R, NG)
    corr = tl.where(den1 > 0, _div(num1, den1), 1.0)
    c = vs1 * corr
    rn_val, rn_b = _e4m3_rn(c)
    rn_i = rn_b.to(tl.int32)
    other = tl.where(rn_val > c, rn_i - 1, rn_i + 1)
    other = tl.minimum(tl.maximum(other, 0), 0x7E)
    other_val = _e4m3_from_byte(other)
    down = tl.minimum(rn_val, other_val)
    up = tl.maximum(rn_val, other_val)
    # up - down is one E4M3 quantum, a power of two >= 2^-9: dividing is multiplying by its exact reciprocal
    p_up = tl.where(up > down, (c - down) * _pow2(-_exp_floor(up - down)), 0.0)
    p_up = tl.minimum(tl.maximum(p_up, 0.0), 1.0)
    row = row_block * BLOCK_R + i // NG
    gidx = row * (out_stride // GROUP) + elem0 // GROUP + pid_k * NG + i % NG  # the group's index in the whole tensor
    if HAS_U:
        us = tl.load(us_ptr + gidx, mask=row < R, other=0.0)
    else:
        us = _uniform(seed ^ _SCALE_SALT, gidx)
    chosen = tl.where(us < p_up, tl.maximum(rn_i, other), tl.minimum(rn_i, other))
    keep = ~(c < float("inf")) | (c < 0.015625) | (c >= 448.0) | (rn_val == c)
    new_b = tl.where(keep, rn_i, chosen)
    return tl.where(c < float("inf"), new_b, 0x7F)


@triton.jit
def quantize_kernel(
    # input (any strides); with SCALED a saved FP4 tensor's packed codes and scale bytes (xs_ptr), times alpha_ptr[0]
    x_ptr, xs_ptr, stride_r, stride_k, alpha_ptr,
    # rotation; NVFP4: the pre-pass's amax in, tensor scale s32 and alpha = s32 * factor out (WRITE_S32); uniforms (optional), outputs
    h_ptr, rot_scale, amax_ptr, s32_ptr, alpha_out_ptr, u_ptr, us_ptr, codes_ptr, scales_ptr, mask_ptr,
    # the scale bytes again in Blackwell's 128x4 blocked layout (BLOCKED_SCALES: form "fp4"; the buffer zero-padded)
    blocked_ptr,
    # GEMM-ready values: VALUES = 1 (MXFP4 for the FP8 fold) each row's largest live scale exponent, by atomic max into
    # er_ptr (the fold kernel then writes the FP8 values from the packed codes); 2: BF16 values into values_ptr
    values_ptr, er_ptr,
    # NVFP4 after a rotation: 3 x BLOCK_R x NG float32 per program for the per-group work (_to_group_per_thread)
    scratch_ptr,
    # this launch's [R, K] (K_OUT padded); out_stride: the outputs' row length in elements (K_OUT, or the whole tensor's when
    # this launch writes one column block of it); elem0: the block's first element in the whole tensor (counters of SR draws)
    R, K, K_OUT, out_stride, elem0,
    # the seed: seed_ptr[0] ^ seed_salt, low 31 bits (a step's seed on the device; SR and EDEN's scale SR)
    seed_ptr, seed_salt,
    # NVFP4: val_max for RTN / EDEN, scales_max * val_max (s32 = amax / it), their float32 reciprocals RN(1 / .), the factor
    val_max, ts_den, inv_val_max, inv_ts_den, factor,
    RULE: tl.constexpr, SR: tl.constexpr, GROUP: tl.constexpr, G: tl.constexpr, PRECISION: tl.constexpr,
    SCALED: tl.constexpr, SRC_GROUP: tl.constexpr, TRANS_LOAD: tl.constexpr, HAS_U: tl.constexpr, WRITE_MASK: tl.constexpr, CORR: tl.constexpr, WRITE_PACKED: tl.constexpr, VALUES: tl.constexpr,
    WRITE_S32: tl.constexpr, PLAIN_SCALES: tl.constexpr, BLOCKED_SCALES: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, ROW_ITERS: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    seed = (tl.load(seed_ptr) & 0x7FFFFFFF) ^ seed_salt
    m = _rotation_matrix(h_ptr, G, PRECISION)
    for it in range(ROW_ITERS):  # row blocks pid_r * ROW_ITERS + it, sharing the rotation matrix
        row_block = pid_r * ROW_ITERS + it
        rows = row_block * BLOCK_R + tl.arange(0, BLOCK_R)
        x = _load_tile(x_ptr, xs_ptr, stride_r, stride_k, alpha_ptr, row_block * BLOCK_R, ks, R, K, m, rot_scale, G, PRECISION, SCALED, SRC_GROUP, TRANS_LOAD,
                       BLOCK_R, BLOCK_K)
        NG: tl.constexpr = BLOCK_K // GROUP
        xg, amax, bad = _group_stats(x, BLOCK_R, BLOCK_K, GROUP)  # [BLOCK_R, NG, GROUP], [BLOCK_R, NG] x2
        if RULE == NV_RTN16:  # one scale per 16x16 tile: reduce over the tile's 16 rows (tiles align with BLOCK_R)
            t_amax = tl.max(tl.reshape(amax, (BLOCK_R // 16, 16, NG)), axis=1)
            amax = tl.reshape(tl.broadcast_to(t_amax[:, None, :], (BLOCK_R // 16, 16, NG)), (BLOCK_R, NG))
            t_bad = tl.max(tl.reshape(bad.to(tl.int32), (BLOCK_R // 16, 16, NG)), axis=1)
            bad = tl.reshape(tl.broadcast_to(t_bad[:, None, :], (BLOCK_R // 16, 16, NG)), (BLOCK_R, NG)) > 0
        r2 = rows[:, None]
        k2 = ks[None, :]
        elem = r2 * out_stride + k2 + elem0  # counter for the uniforms of element (r, k): its index in the whole tensor
        # per-group quantities reach the elements by broadcast + reshape; every elementwise operand below is 2-D
        bad2 = tl.reshape(tl.broadcast_to(bad[:, :, None], (BLOCK_R, NG, GROUP)), (BLOCK_R, BLOCK_K))

        if RULE == MX_OCP or RULE == MX_TSENG or RULE == MX_QUEST:
            e = _mx_exponent(xg, amax, RULE, GROUP)
            byte = tl.where(bad, 255, e + 127)
            # x / 2^e as x * 2^-e (a power of two too, e in [-127, 127]): the same FP32 result. Tseng's
            # (x * 0.75) / 2^e as x * (0.75 * 2^-e): equal wherever the result is an FP32 normal (below, code 0)
            inv = _pow2(-e)
            if RULE == MX_TSENG:
                inv = inv * 0.75
            scaled2 = tl.reshape(xg * inv[:, :, None], (BLOCK_R, BLOCK_K))
            mag = _clamp_mag(scaled2)
            cmag, q = _round(mag, u_ptr, elem, (r2 < R) & (k2 < K_OUT), seed, SR, HAS_U)
            codes = _signed_codes(cmag, scaled2, bad2)
            if VALUES == 1:  # each row's largest scale exponent over its groups with a nonzero code and a scale above 2^-127
                if SR:
                    nonzero = tl.max(tl.reshape(cmag, (BLOCK_R, NG, GROUP)), axis=2) > 0
                else:  # RTN: code 0 exactly for |x| * inv <= 0.25, and rounding is monotone
                    nonzero = amax * inv > 0.25
                live = nonzero & ~bad & (e > -127)
                tl.atomic_max(er_ptr + rows, tl.max(tl.where(live, e, _NO_ROW_EXP), axis=1), mask=rows < R)
            if WRITE_MASK:
                trust = ((tl.abs(scaled2) < 6.0) & ~bad2).to(tl.int32)
        else:
            amax_t = tl.load(amax_ptr)
            s32 = tl.where(amax_t > 0, _div_by(amax_t, ts_den, inv_ts_den), 1.0)  # the reference's tensor_scale (1 for an all-zero tensor)
            inv_s32 = _div(1.0, s32)  # per program: the group scales' divisions by s32 become _div_by's FMAs
            if RULE == NV_4OVER6:
                _, b6, d6, inv_d6 = _nv_group_scales(amax, s32, inv_s32, 6.0, _INV6)
                _, b4, d4, inv_d4 = _nv_group_scales(amax, s32, inv_s32, 4.0, 0.25)  # 1/4 exact: amax / 4 as amax * 0.25
                sc6 = _div_by(xg, d6[:, :, None], inv_d6[:, :, None])
                sc4 = _div_by(xg, d4[:, :, None], inv_d4[:, :, None])
                c6, q6 = _rtn_code(_clamp_mag(sc6))
                c4, q4 = _rtn_code(_clamp_mag(sc4))
                err6 = xg - tl.where(sc6 < 0, -q6, q6) * d6[:, :, None]
                err4 = xg - tl.where(sc4 < 0, -q4, q4) * d4[:, :, None]
                pick4 = tl.sum(err4 * err4, axis=2) < tl.sum(err6 * err6, axis=2)
                byte = tl.where(pick4, b4, b6).to(tl.int32)
                scaled2 = tl.reshape(tl.where(pick4[:, :, None], sc4, sc6), (BLOCK_R, BLOCK_K))
                cmag = tl.reshape(tl.where(pick4[:, :, None], c4, c6), (BLOCK_R, BLOCK_K))
                q = tl.reshape(tl.where(pick4[:, :, None], q4, q6), (BLOCK_R, BLOCK_K))
            else:
                if G > 0:  # after a rotation: each group's scale once per group (1-D, one group per thread: _to_group_per_thread)
                    vs, bs, ds, inv_ds = _rotated_group_scales(amax, scratch_ptr, pid_k, s32, inv_s32, val_max, inv_val_max, BLOCK_R, NG)
                    bs = tl.reshape(bs, (BLOCK_R, NG))
                    ds = tl.reshape(ds, (BLOCK_R, NG))
                    inv_ds = tl.reshape(inv_ds, (BLOCK_R, NG))
                else:
                    vs, bs, ds, inv_ds = _nv_group_scales(amax, s32, inv_s32, val_max, inv_val_max)
                byte = bs.to(tl.int32)
                scaled = _div_by(xg, ds[:, :, None], inv_ds[:, :, None])
                scaled2 = tl.reshape(scaled, (BLOCK_R, BLOCK_K))
                mag = _clamp_mag(scaled2)
                cmag, q = _round(mag, u_ptr, elem, (r2 < R) & (k2 < K_OUT), seed, SR, HAS_U)
                if RULE == NV_EDEN:
                    # S = <x, x> / <x, x_hat> per correction group, in code units; s8 <- SR_E4M3(S * s8)
                    qs = tl.where(scaled2 < 0, -q, q)
                    num = tl.sum(tl.reshape(scaled2 * scaled2, (BLOCK_R, BLOCK_K // CORR, CORR)), axis=2)
                    den = tl.sum(tl.reshape(scaled2 * qs, (BLOCK_R, BLOCK_K // CORR, CORR)), axis=2)
                    PER: tl.constexpr = CORR // GROUP  # num and den per scale group (equal within a correction group)
                    num_g = tl.reshape(tl.broadcast_to(num[:, :, None], (BLOCK_R, BLOCK_K // CORR, PER)), (BLOCK_R, NG))
                    den_g = tl.reshape(tl.broadcast_to(den[:, :, None], (BLOCK_R, BLOCK_K // CORR, PER)), (BLOCK_R, NG))
                    byte = tl.reshape(_eden_scale_bytes(tl.reshape(vs, (BLOCK_R * NG,)), num_g, den_g, scratch_ptr, us_ptr, row_block, pid_k, R, out_stride, elem0, seed,
                                                        GROUP, HAS_U, BLOCK_R, NG), (BLOCK_R, NG))
            byte = tl.where(bad, 0x7F, byte)
            codes = _signed_codes(cmag, scaled2, bad2)

        row_ok = rows[:, None] < R
        if WRITE_S32:  # one program writes the tensor scale and alpha (MXFP4: 1 and no alpha: the factor stays on the host)
            if (row_block == 0) & (pid_k == 0):
                if RULE == MX_OCP or RULE == MX_TSENG or RULE == MX_QUEST:
                    tl.store(s32_ptr, 1.0)
                else:
                    tl.store(s32_ptr, s32)
                    tl.store(alpha_out_ptr, s32 * factor)
        # --- GEMM-ready values [R, out_stride] (hopper.md): the same numbers as the packed form, in what the tensor cores take
        if VALUES == 2:  # NVFP4 as exact BF16 q * s8 (twin: hopper_gemm.nvfp4_to_bf16)
            s8 = tl.where(byte == 0x7F, float("nan"), _e4m3_from_byte(byte))
            v = q * tl.reshape(tl.broadcast_to(s8[:, :, None], (BLOCK_R, NG, GROUP)), (BLOCK_R, BLOCK_K))  # 2-D, as above
            v = (v.to(tl.int32, bitcast=True) | (((codes >> 3) & 1) << 31)).to(tl.float32, bitcast=True)  # sign as a bit
            tl.store(values_ptr + rows[:, None] * out_stride + ks[None, :], v.to(tl.bfloat16), mask=row_ok)
        if WRITE_PACKED:
            # --- write: packed codes [R, out_stride/2], scales [R, out_stride/GROUP] (plain and/or blocked), mask bits [R, out_stride/8]
            pairs = tl.reshape(codes, (BLOCK_R, BLOCK_K // 2, 2))
            lo, hi = tl.split(pairs)
            packed = (lo | (hi << 4)).to(tl.uint8)
            pc = pid_k * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
            tl.store(codes_ptr + rows[:, None] * (out_stride // 2) + pc[None, :], packed, mask=row_ok)
            gc = pid_k * NG + tl.arange(0, NG)
            if PLAIN_SCALES:
                tl.store(scales_ptr + rows[:, None] * (out_stride // GROUP) + gc[None, :], byte.to(tl.uint8), mask=row_ok)
            if BLOCKED_SCALES:  # scale (i, j) at formats.blocked_index: 512-byte tiles of 128 rows x 4 columns
                i = rows[:, None] + elem0 // out_stride  # (i, j) in the whole tensor: this launch's block starts at elem0
                j = gc[None, :] + (elem0 % out_stride) // GROUP
                tiles_per_row = (out_stride // GROUP + 3) // 4  # the scale columns padded to 4
                blk = ((i // 128) * tiles_per_row + j // 4) * 512 + (i % 32) * 16 + ((i % 128) // 32) * 4 + j % 4
                tl.store(blocked_ptr + blk, byte.to(tl.uint8), mask=row_ok)
            if WRITE_MASK:
                t_lo, t_hi = tl.split(tl.reshape(trust, (BLOCK_R, BLOCK_K // 2, 2)))  # bit pairs first (neighbours share a thread)
                quads = tl.reshape(t_lo | (t_hi << 1), (BLOCK_R, BLOCK_K // 8, 4))
                weights = (1 << (2 * tl.arange(0, 4))).to(tl.int32)
                mbyte = tl.sum(quads * weights[None, None, :], axis=2).to(tl.uint8)
                mc = pid_k * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)
                tl.store(mask_ptr + rows[:, None] * (out_stride // 8) + mc[None, :], mbyte, mask=row_ok)


@triton.jit
def signed_hadamard_kernel(h_ptr, out_ptr, seed_ptr, seed_salt, G: tl.constexpr, INVERSE: tl.constexpr):
    """M = D H, or M^T = H D with INVERSE, for the +-1 Hadamard H [G, G] and D = diag(seeds.random_signs(G, seed)).

    One launch per random rotation where the torch formula took ~17 (hash, shifts, casts: most of a small
    model's step's launches). random_signs' sign i is 1 - 2 * (hash32(key, i) >> 31): the hash's top bit,
    set exactly when _uniform's (hash >> 8) / 2^24 is >= 1/2.
    """
    key = (tl.load(seed_ptr) & 0x7FFFFFFF) ^ seed_salt
    i = tl.arange(0, G)
    sign = tl.where(_uniform(key, i) >= 0.5, -1.0, 1.0)
    h = tl.load(h_ptr + i[:, None] * G + i[None, :])
    if INVERSE:
        m = h * sign[None, :]  # M^T = H D: column j scaled by signs[j]
    else:
        m = h * sign[:, None]  # M = D H: row i scaled by signs[i]
    tl.store(out_ptr + i[:, None] * G + i[None, :], m)


# ------------------------------------------------------------------------------------------------
# Launcher: check, allocate, launch
# ------------------------------------------------------------------------------------------------

import functools  # noqa: E402
import math  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import NamedTuple  # noqa: E402

import torch  # noqa: E402

from fp4compile import formats, persistent  # noqa: E402
from fp4compile.lowering.blackwell import Fp4Operand, fp4_operand, fp4_recipe  # noqa: E402
from fp4compile.lowering.hopper_gemm import record_folds  # noqa: E402
from fp4compile.quantized import GemmValues, QuantizedTensor, ScaleFormat  # noqa: E402
from fp4compile.quantizers import Quantizer  # noqa: E402
from fp4compile.reference.nvfp4 import EDEN_VAL_MAX, SR_VAL_MAX  # noqa: E402
from fp4compile.rotations import Rotation, hadamard_matrix  # noqa: E402
from fp4compile.seeds import KEY_BITS, DeviceSeed, Seed  # noqa: E402


@dataclass(frozen=True)
class KernelRule:
    """How a built-in quantizer maps onto the kernel: rule, rounding and NVFP4 constants."""

    rule: int  # one of the rule constants (their int value)
    stochastic: bool = False
    val_max: float = 6.0
    scales_max: float = 448.0
    mask: bool = False

    @property
    def inv_val_max(self) -> float:
        """RN_float32(1 / float32(val_max)): the kernel divides by val_max as ``_div_by(v, val_max, this)``."""
        return float32_reciprocal(self.val_max)

    @property
    def inv_ts_den(self) -> float:
        """RN_float32(1 / float32(scales_max * val_max)), for the tensor scale amax / (scales_max * val_max)."""
        return float32_reciprocal(self.scales_max * self.val_max)


@functools.lru_cache(maxsize=64)
def float32_reciprocal(value: float) -> float:
    """RN(1 / v) in float32 for v rounded to float32 (IEEE division on the host's float32 tensors)."""
    return float(torch.ones((), dtype=torch.float32) / torch.tensor(value, dtype=torch.float32))


RULES: dict[str, KernelRule] = {
    "mxfp4_rtn": KernelRule(MX_OCP.value),
    "mxfp4_quest": KernelRule(MX_QUEST.value, mask=True),
    "mxfp4_tseng_rtn": KernelRule(MX_TSENG.value),
    "mxfp4_tseng_sr": KernelRule(MX_TSENG.value, stochastic=True),
    "nvfp4_rtn": KernelRule(NV_RTN.value),
    "nvfp4_rtn_16x16": KernelRule(NV_RTN16.value),
    "nvfp4_4over6": KernelRule(NV_4OVER6.value, scales_max=256.0),
    "nvfp4_sr": KernelRule(NV_RTN.value, stochastic=True, val_max=SR_VAL_MAX),
    "nvfp4_ms_eden": KernelRule(NV_EDEN.value, val_max=EDEN_VAL_MAX, scales_max=256.0),
}


def supports(quantizer: Quantizer) -> bool:
    """Whether the kernel implements this quantizer (others run through the reference)."""
    return quantizer.name in RULES


# No FMA contraction: a*b + c must round twice, as in the reference (e.g. QuEST's 0.487 * std + 1e-8 * p).
# The interpreter takes no compile options.
_NO_FMA = {} if INTERPRETED else {"enable_fp_fusion": False}


MAX_ELEMENTS = 2**31 - 1  # the kernels address elements with int32 offsets (row * stride + column)


def check_elements(numel: int, what: str) -> None:
    """Refuse a tensor of more elements than the kernels' int32 offsets reach: past 2^31 - 1 they would wrap and read
    or write wrong addresses, silently. The error names the fix."""
    if numel > MAX_ELEMENTS:
        raise ValueError(f"{what}: {numel:,} elements, more than the Triton kernels' int32 offsets reach (2^31 - 1 = {MAX_ELEMENTS:,}); "
                         "use fewer tokens per step (a smaller batch or sequence), keep this layer in high precision "
                         "(options={'skip': ['<its module name>']}), or use kernels='reference'")


def _block_k(k_out: int, minimum: int, largest: int = 128) -> int:
    for b in (128, 64, 32, 16):
        if minimum <= b <= largest and k_out % b == 0:
            return b
    raise ValueError(f"quantize kernel: padded length {k_out} is not a multiple of {minimum}")


class Tile(NamedTuple):
    """A program's tile and warps: ``block_r`` rows x up to ``block_k`` elements along the quantization axis,
    for ``row_iters`` consecutive row blocks in turn (the rotation matrix loaded once for all of them), and a cap
    on the registers per thread (``max_registers``, Triton's ``maxnreg``; 0 leaves them to the compiler)."""

    block_r: int
    block_k: int
    num_warps: int
    row_iters: int = 1
    max_registers: int = 0

    def check(self) -> None:
        """Triton's shapes are powers of two: say which field is not, before a compile error would."""
        for field, value, low in (("block_r", self.block_r, 1), ("block_k", self.block_k, 16), ("num_warps", self.num_warps, 1)):
            if value < low or value & (value - 1):
                raise ValueError(f"quantize kernel: {field}={value} must be a power of two >= {low} (tile {tuple(self)})")
        if self.row_iters < 1:
            raise ValueError(f"quantize kernel: row_iters={self.row_iters} must be >= 1 (tile {tuple(self)})")
        if self.max_registers and not 24 <= self.max_registers <= 255:
            raise ValueError(f"quantize kernel: max_registers={self.max_registers} must be 0 (the compiler's choice) or 24..255 (tile {tuple(self)})")

    def label(self) -> str:
        """``rows x K / warps``, ``x iters`` when a program takes several row blocks, ``rN`` for a register cap."""
        return (f"{self.block_r}x{self.block_k}/{self.num_warps}" + (f"x{self.row_iters}" if self.row_iters > 1 else "")
                + (f"r{self.max_registers}" if self.max_registers else ""))

    def compile_options(self) -> dict:
        """The quantize kernel's compile options: no FMA contraction (``_NO_FMA``) and the register cap (none
        under the interpreter, which takes no compile options)."""
        if INTERPRETED or not self.max_registers:
            return _NO_FMA
        return {**_NO_FMA, "maxnreg": self.max_registers}


def default_tile(g: int, transposed: bool, rows_multiple: int = 1) -> Tile:
    """The tile the launcher uses for rotation size g (0: none), reading along rows or transposed, with a
    multiple of ``rows_multiple`` rows (16 for the rule whose scales cover 16 x 16 blocks).

    Session 5 found the kernels limited by how many warps their registers allowed, and chose tiles of ~16
    elements per thread; session 9's Nsight Compute found them issue-bound at ~0.75 instructions per cycle per
    scheduler at any occupancy (24%-92%), so instructions per element decide, and each program pays ~100
    instructions of address and layout set-up per thread. Session 10's sweep (``bench_kernels.py --graphs --sweep``,
    H200, BENCHMARKS.md), after the FP8 form lost its in-kernel fold (kernels/fold.py): rotated along-row MXFP4
    (QuEST fwd X, Tseng E) on 32 rows x 128 / 4 warps (static SASS 50 -> 42 and 32.5 -> 26 per element; 0.183 ->
    0.166 ms and 0.148 -> 0.128 at 16384 x 4096), unrotated along-row on 16 x 128 / 4 (NVFP4 SR E 0.202 -> 0.190;
    RTN and 4/6 equal), Hadamard-32 transposed reads on 128 x 64 / 4 (E^T 0.149 -> 0.132, Xq^T re-quantization
    0.206 -> 0.190). A transposed read loads the tile's rows as the contiguous axis (128 bytes per load for 64
    of them). Hadamard-128's ``tl.dot`` needs 64 rows of 128 to be fast. A rotated transposed read is capped at
    128 registers, which keeps 16 warps per SM: ``nvidia``'s Hadamard-16 E^T kernel wants 141 (12 warps) and
    spills 4 words under the cap (``instruction_count``).
    """
    if g == 128:
        tile = Tile(64, 128, 4)
    elif transposed:
        tile = Tile(128 if g == 32 else 64, 64, 4, max_registers=128 if g else 0)
    else:
        tile = Tile(32, 128, 4) if g else Tile(16, 128, 4)
    return tile._replace(block_r=-(-tile.block_r // rows_multiple) * rows_multiple)


class PreparedRotation(NamedTuple):
    """A rotation ready for the kernels: ``h = M / scale`` (entries +-1, bf16, on the device) and ``scale``."""

    h: torch.Tensor
    scale: float


def device_rotation(rotation: torch.Tensor | PreparedRotation | None, device: torch.device) -> PreparedRotation:
    """``M / c`` on the device as bf16 and ``c = max |M|`` (float32 ``1/sqrt(G)`` for a Hadamard), so ``M / c`` is +-1.

    ``rotation`` built on the CPU (what the lowering passes) costs no host synchronization: ``c`` is read on
    the host and the +-1 matrix travels through pinned memory without blocking. A PreparedRotation (the
    lowering caches those of fixed rotations) is used as it is. A matrix already on the GPU is read back
    once (a sync); only tests do that. No rotation: a 1-element placeholder and c = 1. A matrix whose entries
    are not all +-c (not a Hadamard-type rotation) is refused: the kernels hold M / c in bf16.
    """
    if rotation is None:
        return PreparedRotation(placeholder(torch.bfloat16, device), 1.0)
    if isinstance(rotation, PreparedRotation):
        return rotation
    rot_scale = float(rotation.abs().max())
    h = rotation.float() / rot_scale
    if not bool((h.abs() == 1).all()):
        raise ValueError(f"the rotate-quantize kernels take Hadamard-type rotations (every entry +-{rot_scale:g}); this "
                         f"{tuple(rotation.shape)} matrix has other entries: quantize with the reference (kernels='reference')")
    h = h.to(torch.bfloat16).contiguous()  # +-1: exact
    if h.device.type == "cpu" and device.type == "cuda":
        return PreparedRotation(h.pin_memory().to(device, non_blocking=True), rot_scale)
    return PreparedRotation(h.to(device), rot_scale)


def rotation_size(rotation: torch.Tensor | PreparedRotation | None) -> int:
    """G of a G x G rotation (0 for none)."""
    if rotation is None:
        return 0
    return (rotation.h if isinstance(rotation, PreparedRotation) else rotation).shape[0]


@functools.lru_cache(maxsize=16)
def host_factor(factor: float) -> torch.Tensor:
    """``1.0f * factor`` as a 0-dim float32 CPU tensor (what ``tensor_scale.float() * factor`` gives for MXFP4)."""
    return torch.ones((), dtype=torch.float32) * factor


def placeholder(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached 1-element tensor for a pointer argument the kernel does not touch in this specialisation."""
    return persistent.cached(("placeholder", dtype), device, lambda: torch.empty(1, dtype=dtype, device=device))


def kernel_seed(seed: Seed, device: torch.device) -> tuple[torch.Tensor, int]:
    """``(seed_ptr, seed_salt)`` for the kernels: the seed is ``(seed_ptr[0] & 0x7FFFFFFF) ^ seed_salt``.

    A DeviceSeed is passed as it is (no host sync); an int seed (no-gradient calls: one per layer; tests)
    is a cached device copy, never evicted: a captured CUDA graph keeps reading its address.
    """
    if isinstance(seed, DeviceSeed):
        base = seed.base.reshape(1)
        return (base if base.device == torch.device(device) else base.to(device)), seed.salt & KEY_BITS
    value = int(seed) & KEY_BITS
    return persistent.cached(("seed", value), device, lambda: torch.tensor([value], dtype=torch.int64, device=device)), 0


def _fixed_hadamard(g: int, device: torch.device) -> torch.Tensor:
    """The +-1 Sylvester Hadamard matrix [g, g] (bf16) on ``device``: one cached tensor per device and size."""
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" name one device: one cache entry
        device = torch.device("cuda", torch.cuda.current_device())
    return persistent.cached(("hadamard+-1", g), device, lambda: torch.sign(hadamard_matrix(g)).to(device, torch.bfloat16))


def is_fixed_hadamard(rotation: PreparedRotation | None) -> bool:
    """Whether ``rotation`` is the fixed Sylvester Hadamard that :func:`prepare_rotation` made (kernels may then
    rotate by its butterfly instead of a matmul)."""
    if rotation is None or not isinstance(rotation, PreparedRotation) or rotation.h.dim() != 2:
        return False
    return rotation.h is _fixed_hadamard(rotation.h.shape[0], rotation.h.device)


def prepare_rotation(rotation: Rotation, seed: Seed | None, device: torch.device, *, inverse: bool = False) -> PreparedRotation | None:
    """The rotation's ``M`` (or ``M^T`` with ``inverse``) prepared for the kernels on ``device``, without a host sync.

    A fixed Hadamard is copied once per device. A random one, ``M = D H``, is formed on the device from the
    seed each call by one launch of ``signed_hadamard_kernel`` (``seeds.random_signs``: the reference's signs,
    bit for bit), so that a DeviceSeed never leaves the device and a CUDA-graph replay draws new signs. None for
    the identity.
    """
    if rotation.is_identity:
        return None
    device = torch.device(device)
    c = float(torch.tensor(1.0 / rotation.size**0.5, dtype=torch.float32))  # max |M|, float32 1/sqrt(G)
    h = _fixed_hadamard(rotation.size, device)
    if not rotation.is_random:
        return PreparedRotation(h, c)  # H is symmetric: H^T = H
    if seed is None:
        raise ValueError(f"rotation {rotation} is random: pass a seed")
    g = rotation.size
    m = torch.empty(g, g, dtype=torch.bfloat16, device=device)
    seed_ptr, seed_salt = kernel_seed(seed, device)
    signed_hadamard_kernel[(1,)](h, m, seed_ptr, seed_salt, G=g, INVERSE=inverse)
    return PreparedRotation(m, c)


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    if device.type != "cuda":
        return "ieee"
    return "bf16" if dtype == torch.bfloat16 else "tf32x3"


def quantize(
    x: torch.Tensor | list[torch.Tensor] | QuantizedTensor,
    quantizer: Quantizer,
    rotation: torch.Tensor | PreparedRotation | None,
    seed: Seed,
    *,
    transpose: bool = False,
    pad_to: int = 1,
    uniforms: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    tile: Tile | None = None,
) -> tuple[QuantizedTensor, torch.Tensor | None]:
    """Rotate and quantize along the last axis of ``x`` (or of ``x^T`` with ``transpose``) in one pass.

    ``x`` is a dense 2-D tensor; or a list of them, ``[T, N_i]`` column blocks of the tensor ``[T, N]`` they make side
    by side (a fused layer's parts' gradients), each read by its own launch into its slice of the one set of
    outputs, so that the blocks are never concatenated; or a QuantizedTensor ``[Kq, R]`` (the backward's
    re-quantization of a forward-quantized operand) whose exact BF16 block values are written first
    (kernels/fold.py) and read transposed, times its tensor scale and factor.
    ``rotation`` is the G x G matrix the reference would use (or None): a PreparedRotation from
    ``prepare_rotation`` costs no host sync (a plain matrix is prepared here; tests pass those). ``seed``: an
    int or a DeviceSeed (``fp4compile.seeds``). The quantization axis is zero-padded to a multiple of ``pad_to``. ``uniforms`` (element, scale)
    replaces the kernel's counter-based draws with given ones (tests). ``tile`` overrides
    :func:`default_tile` (benchmarks' sweeps). Returns the quantized tensor and its packed trust-mask bits (or None).
    """
    _, q, mask = _launch(x, quantizer, rotation, seed, "none", True, transpose, pad_to, uniforms, tile)
    return q, mask


VALUE_FORMS = {"fp8": 1, "bf16": 2}  # the kernel's VALUES; "fp4" (Blackwell) writes packed codes + blocked scales instead
GEMM_FORMS = (*VALUE_FORMS, "fp4")


def quantize_for_gemm(
    x: torch.Tensor | list[torch.Tensor] | QuantizedTensor,
    quantizer: Quantizer,
    rotation: torch.Tensor | PreparedRotation | None,
    seed: Seed,
    *,
    form: str,
    keep_packed: bool = False,
    transpose: bool = False,
    pad_to: int = 1,
    uniforms: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    tile: Tile | None = None,
) -> tuple[GemmValues | Fp4Operand, QuantizedTensor | None, torch.Tensor | None]:
    """As :func:`quantize`, writing the operand in the form its GEMM multiplies.

    ``form`` is ``"fp8"`` (MXFP4 quantizers: folded FP8 values and FP32 row scales; the kernel writes the packed
    codes and each row's largest scale exponent, then ``kernels.fold`` folds the codes in a second, light pass),
    ``"bf16"`` (NVFP4 quantizers: exact ``q * s8``, written by the kernel itself), or ``"fp4"`` (Blackwell's
    native GEMM, MXFP4 in groups of 32 or NVFP4 in groups of 16: the packed codes as ``float4_e2m1fn_x2`` and the
    scale bytes written a second time in the 128x4 blocked layout, as a ``lowering.blackwell.Fp4Operand``). With
    ``keep_packed`` the packed codes, scales and mask are written too (the forward operands the backward
    re-reads). Returns ``(GEMM operand, packed or None, mask bits or None)``.
    """
    if form not in GEMM_FORMS:
        raise ValueError(f"quantize_for_gemm: form must be one of {list(GEMM_FORMS)}, got {form!r}")
    if form == "fp4":
        fp4_recipe(quantizer)  # MXFP4 groups of 32 or NVFP4 groups of 16, else a ValueError naming both
    else:
        wants = ScaleFormat.E8M0 if form == "fp8" else ScaleFormat.E4M3
        if quantizer.scale_format is not wants:
            raise ValueError(f"quantize_for_gemm: form {form!r} takes {wants.value}-scaled quantizers; {quantizer.name!r} is {quantizer.scale_format.value}")
    return _launch(x, quantizer, rotation, seed, form, keep_packed, transpose, pad_to, uniforms, tile)


class _Block(NamedTuple):
    """One launch's input: ``src`` read as ``[r, k]`` through its strides, at (row0, col0) of the whole tensor."""

    src: torch.Tensor
    stride_r: int
    stride_k: int
    r: int
    k: int
    row0: int
    col0: int


def _blocks(parts: list[torch.Tensor], transpose: bool, multiple: int, rows_multiple: int) -> tuple[list[_Block], tuple[int, int]]:
    """The launches for column blocks ``[T, N_i]`` of a ``[T, N]`` tensor, and the whole tensor's (r, k) as quantized.

    Read transposed (along T), block i is rows N_0 + ... + N_(i-1) onward of the result, which must start at a multiple
    of ``rows_multiple`` (the rule's row tiles); read along the rows (along N), it is columns from there, which must start
    at a multiple of the padding ``multiple`` (groups, rotation). Blocks that do not are concatenated first (one copy) and
    launched as one.
    """
    if not parts or any(p.dim() != 2 for p in parts) or len({p.shape[0] for p in parts}) != 1:
        raise ValueError(f"quantize kernel: column blocks must be 2-D with equal rows, got shapes {[tuple(p.shape) for p in parts]}")
    if len({(p.dtype, p.device) for p in parts}) != 1:
        raise ValueError(f"quantize kernel: column blocks must share a dtype and device, got {[(p.dtype, str(p.device)) for p in parts]}")
    t, n = parts[0].shape[0], sum(p.shape[1] for p in parts)
    if any(p.shape[1] % (rows_multiple if transpose else multiple) for p in parts[:-1]):
        parts = [torch.cat(parts, dim=1)]
    blocks, off = [], 0
    for p in parts:
        if transpose:
            blocks.append(_Block(p, p.stride(1), p.stride(0), p.shape[1], t, off, 0))
        else:
            blocks.append(_Block(p, p.stride(0), p.stride(1), t, p.shape[1], 0, off))
        off += p.shape[1]
    return blocks, (n, t) if transpose else (t, n)


def _block_view(t: torch.Tensor, b: _Block, per: int) -> torch.Tensor:
    """The part of a whole-tensor output (``per`` elements per stored column) that block ``b``'s launch writes."""
    if t.numel() == 0:  # a placeholder: not written
        return t
    return t[b.row0:, b.col0 // per:] if t.dim() == 2 else t[b.row0:]


def _launch(x, quantizer, rotation, seed, form, keep_packed, transpose, pad_to, uniforms, tile):
    rule = RULES.get(quantizer.name)
    if rule is None:
        raise NotImplementedError(f"no Triton kernel for quantizer {quantizer.name!r}; it runs through the reference")
    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    scaled, src_group, src_scales = 0, 1, None
    if isinstance(x, QuantizedTensor):  # re-quantization of a saved [Kq, R] tensor along Kq: its packed codes read transposed
        scaled = 1 if x.scale_format is ScaleFormat.E8M0 else 2
        src_group = x.group_size
        alpha_src = (x.tensor_scale.reshape(1).float() * x.factor).contiguous()
        codes_in = x.codes.reshape(-1, x.codes.shape[-1]).contiguous()  # [Kq, R/2]
        src_scales = x.scales.reshape(codes_in.shape[0], -1).contiguous()  # [Kq, R/group]
        x = codes_in
        transpose = True
    group = quantizer.group_size
    g = rotation_size(rotation)
    multiple = math.lcm(group, g or 1, 16, pad_to)
    rows_multiple = 16 if rule.rule == NV_RTN16.value else 1  # its scales cover 16 x 16 blocks, which must not straddle programs
    if isinstance(x, (list, tuple)):
        blocks, (r, k) = _blocks(list(x), transpose, multiple, rows_multiple)
    elif scaled:  # rows: the saved tensor's columns, 2 per code byte; the kernel reads the bytes along them
        r, k = x.shape[1] * 2, x.shape[0]
        if r % src_group:
            raise ValueError(f"quantize kernel: a saved tensor's rows of {r} elements are not whole groups of {src_group}")
        blocks = [_Block(x, 1, x.stride(0), r, k, 0, 0)]
    else:
        if x.dim() != 2:
            raise ValueError(f"quantize kernel takes a 2-D tensor, got shape {tuple(x.shape)}")
        r, k = (x.shape[1], x.shape[0]) if transpose else x.shape
        stride_r, stride_k = (x.stride(1), x.stride(0)) if transpose else (x.stride(0), x.stride(1))
        blocks = [_Block(x, stride_r, stride_k, r, k, 0, 0)]
    device = blocks[0].src.device
    dtype = torch.bfloat16 if scaled else blocks[0].src.dtype  # a saved source's block values are exact in BF16, rotated before alpha is applied
    if not scaled:
        alpha_src = placeholder(torch.float32, device)  # read only with SCALED
    xs = src_scales if scaled else placeholder(torch.uint8, device)
    k_out = -(-k // multiple) * multiple
    # the largest offsets the kernel forms: each input's last element (any strides) and the padded outputs' [r, k_out]
    check_elements(max([r * k_out] + [(b.r - 1) * b.stride_r + (b.k - 1) * b.stride_k + 1 for b in blocks]),
                   f"quantize kernel ({quantizer.name}, [{r}, {k}])")
    h, rot_scale = device_rotation(rotation, device)
    launches = []  # per block: (block, its k_out, grid, common kernel arguments, tile)
    for b in blocks:
        trans_load = b.stride_r == 1 and b.stride_k != 1  # r is the contiguous axis: load [K, R] tiles
        t = Tile(*tile) if tile is not None else default_tile(g, trans_load, rows_multiple)
        t.check()
        block_r, largest_k, num_warps, row_iters, _ = t
        if block_r % rows_multiple:
            raise ValueError(f"quantize kernel: {quantizer.name} takes tiles of a multiple of {rows_multiple} rows; got block_r={block_r}")
        b_k_out = k_out - (k - b.k) if b.col0 + b.k == k else b.k  # the last block along the rows takes the padding
        block_k = _block_k(b_k_out, max(group, g, 16), max(largest_k, group, g, 16))
        grid = (triton.cdiv(b.r, block_r * row_iters), b_k_out // block_k)
        if scaled and t.block_r % src_group:
            raise ValueError(f"quantize kernel: a saved tensor is read in tiles of whole groups of {src_group} rows; got block_r={t.block_r}")
        common = dict(SCALED=scaled, SRC_GROUP=src_group, TRANS_LOAD=trans_load, G=g, PRECISION=_precision(dtype, device),
                      BLOCK_R=block_r, BLOCK_K=block_k, ROW_ITERS=row_iters, num_warps=num_warps)
        launches.append((b, b_k_out, grid, common, t))
    is_nv = quantizer.scale_format is ScaleFormat.E4M3
    amax = placeholder(torch.float32, device)  # MXFP4 rules never read it
    if is_nv:  # pre-pass: the (rotated) amax, from which the quantize kernel forms the tensor scale
        amax = torch.zeros(1, device=device, dtype=torch.float32)
        for b, _, grid, common, _ in launches:  # every block's into one amax: the tensor scale spans the whole tensor
            stats_kernel[grid](b.src, xs, b.stride_r, b.stride_k, alpha_src, h, rot_scale, amax, b.r, b.k, **common, **_NO_FMA)
    # the tensor scale (NVFP4; MXFP4's is 1, written only where the packed form keeps it) and NVFP4's alpha, each its own
    # tensor (they become op outputs), written by the kernel: no small torch ops per quantization
    write_s32 = is_nv or keep_packed
    s32 = torch.empty(1, device=device, dtype=torch.float32) if write_s32 else placeholder(torch.float32, device)
    alpha_out = torch.empty((), device=device, dtype=torch.float32) if is_nv else placeholder(torch.float32, device)
    if write_s32 and (r == 0 or k_out == 0):  # an empty tensor launches no program: its tensor scale is 1, as the reference's
        s32.fill_(1.0)
        alpha_out.fill_(quantizer.factor)
    empty8 = placeholder(torch.uint8, device)  # outputs this launch does not write (never returned)
    values = VALUE_FORMS.get(form, 0)
    native = form == "fp4"
    # the FP8 form: the kernel writes the packed codes and scales (kept or not) and each row's largest live scale
    # exponent (atomic max from the "no live group" marker); the fold kernel then writes the FP8 values from them.
    # The FP4 form: the packed codes, and the scales in the blocked layout (plain too where they are kept)
    write_packed = keep_packed or values == 1 or native
    plain_scales = keep_packed or values == 1
    e_r = torch.full((r,), _NO_ROW_EXP.value, dtype=torch.int32, device=device) if values == 1 else empty8
    scales = torch.empty(r, k_out // group, dtype=torch.uint8, device=device) if plain_scales else empty8
    codes = torch.empty(r, k_out // 2, dtype=torch.uint8, device=device) if write_packed else empty8
    blocked = empty8
    if native:  # the padding of the 128 x 4 tiles must read 0 (as formats.to_blocked's): zeroed only where there is some
        rows_p, cols_p = formats.blocked_shape(r, k_out // group)
        blocked = (torch.zeros if (rows_p, cols_p) != (r, k_out // group) else torch.empty)(rows_p * cols_p, dtype=torch.uint8, device=device)
    out_values = torch.empty(r, k_out, dtype=torch.bfloat16, device=device) if values == 2 else empty8
    write_mask = rule.mask and keep_packed
    mask = torch.empty(r, k_out // 8, dtype=torch.uint8, device=device) if write_mask else empty8
    u_elem, u_scale = uniforms if uniforms is not None else (None, None)
    has_u = uniforms is not None
    u_elem = u_elem.to(device).contiguous() if u_elem is not None else placeholder(torch.float32, device)
    u_scale = u_scale.to(device).contiguous() if u_scale is not None else placeholder(torch.float32, device)
    seed_ptr, seed_salt = kernel_seed(seed, device)
    for b, b_k_out, grid, common, t in launches:  # each block into its slice of the outputs (row0 / col0 onward)
        scratch = placeholder(torch.float32, device)
        if is_nv and (g > 0 or rule.rule == NV_EDEN.value):  # per program: 3 floats per scale group of its tile (_to_group_per_thread)
            scratch = torch.empty(grid[0] * grid[1] * 3 * common["BLOCK_R"] * (common["BLOCK_K"] // group), dtype=torch.float32, device=device)
        quantize_kernel[grid](
            b.src, xs, b.stride_r, b.stride_k, alpha_src, h, rot_scale, amax, s32, alpha_out, u_elem, u_scale,
            _block_view(codes, b, 2), _block_view(scales, b, group), _block_view(mask, b, 8), blocked,
            _block_view(out_values, b, 1), _block_view(e_r, b, 1), scratch,
            b.r, b.k, b_k_out, k_out, b.row0 * k_out + b.col0, seed_ptr, seed_salt,
            rule.val_max, rule.scales_max * rule.val_max, rule.inv_val_max, rule.inv_ts_den, quantizer.factor,
            RULE=rule.rule, SR=rule.stochastic, GROUP=group, HAS_U=has_u, WRITE_MASK=write_mask, CORR=group,
            WRITE_PACKED=write_packed, VALUES=values, WRITE_S32=write_s32, PLAIN_SCALES=plain_scales, BLOCKED_SCALES=native,
            **common, **t.compile_options(),
        )
    # alpha = tensor scale * factor in float32, as the reference forms it (the kernel wrote NVFP4's); MXFP4's tensor
    # scale is 1, so its alpha is the factor alone, kept on the host (a 0-dim CPU tensor: no kernel, no copy)
    alpha = alpha_out if is_nv else host_factor(quantizer.factor)
    q = QuantizedTensor(codes, scales, quantizer.scale_format, group, s32.reshape(()), quantizer.factor) if keep_packed else None
    gemm = None
    if values == 1:
        from fp4compile.kernels.fold import fold_mxfp4_fp8

        a8, row_scale = fold_mxfp4_fp8(codes, scales, e_r, group_size=group)  # unfoldable groups into the device's fold counter
        record_folds(r * (k_out // group))
        gemm = GemmValues(a8, row_scale, alpha)
    elif values == 2:
        gemm = GemmValues(out_values, None, alpha)
    elif native:
        gemm = fp4_operand(codes, blocked, quantizer.scale_format, alpha)
    return gemm, q, (mask if write_mask else None)
