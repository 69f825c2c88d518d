"""FP4 GEMMs on Hopper (sm_90), which has FP8 tensor cores but no FP4 ones.

Same contract as :func:`fp4compile.reference.gemm.gemm_nt`::

    out[M, N] = (A_blk[M, K] @ B_blk[N, K]^T) * (alpha_A * alpha_B)

and the same operand values (../shared/docs/hopper.md gives the method and the measurements):

* **MXFP4 x MXFP4** (E2M1 codes, one E8M0 power-of-two scale per group): folded exactly into FP8 e4m3
  values with one FP32 scale per row. With ``E_r`` the largest group exponent of a row (over groups that
  hold a nonzero code and a scale above E8M0's smallest, 2^-127: the quantize kernel, which finds E_r before
  rounding, sees exactly these groups; values under 6 * 2^-127 cannot set a row's scale, and are counted
  below when they do not fold)::

      a8[r, k]     = q[r, k] * 2^(e_g - E_r + 6)      (float8_e4m3fn; the largest, 6 * 2^6 = 384 < 448)
      row_scale[r] = 2^(E_r - 6)                     (float32)

  This is exact for every group with ``e_g >= E_r - 14`` (its smallest value, 0.5 * 2^-8 = 2^-9, is
  E4M3's smallest subnormal). A group further below holds values under 2^-14 of its row's largest
  group; the E4M3 cast rounds them (to nearest even). Such groups are counted (:func:`fold_stats`),
  never hidden. The GEMM is then one row-wise scaled FP8 GEMM, ``torch._scaled_mm(a8, b8.t(),
  scale_a=row_scale_a * alpha [M, 1], scale_b=row_scale_b^T [1, N], use_fast_accum=False)``: products
  of E4M3 values are exact, but Hopper's FP8 tensor cores do not accumulate in full FP32, so the result
  is **not bit-exact**. Measured on an H100 (max |error| / max |C| against an fp64 GEMM of the same
  values): ~1.1e-4 in ../shared/docs/hopper.md; 1.5e-4..4.4e-4 here when the groups' magnitudes spread
  over 2^+-2..2^+-6 (K 4096..16384); exactly 0 on Gaussian data, whose exact partial sums fit the
  accumulator. Fast accumulation gives 2e-3..6e-3, which is why it stays off. On the CPU, torch's
  ``_scaled_mm`` accumulates in FP32 and agrees with the reference to float32 rounding.
* **Everything else** (NVFP4, mixed formats, high-precision operands): each operand's values are exact
  in BF16 (``e2m1 * s8`` has at most 6 significant bits; E8M0 values 2), so the GEMM is a BF16 GEMM with
  FP32 output (exact products, FP32 accumulation: exact emulation at BF16 speed) and the tensor scales
  and factors multiply the FP32 result before the cast to ``out_dtype``. An operand that is a plain
  float32/float16/float64 tensor is not exact in BF16; then both operands are multiplied in float32.

Constraints of ``torch._scaled_mm`` (CUDA) that this module meets: K and N multiples of 16 (K is a
multiple of the group size 32; N is zero-padded to a multiple of 16 when it is not), the first operand
row-major and the second column-major on sm_90 (``b8.t()`` of a row-major ``[N, K]``), row-wise scales
float32 and contiguous (``[M, 1]`` and ``[1, N]``), output float32, bfloat16 or float16 (other dtypes
are computed in float32 and cast). ``alpha`` is a device tensor multiplied into ``scale_a``: no host
sync. The FP8 path runs on CUDA devices of compute capability 8.9 or more, and on the CPU where this
torch's CPU ``_scaled_mm`` takes row-wise scales (torch 2.13 does, 2.11 does not: probed once);
elsewhere MXFP4 takes the exact BF16 path.

Both conversions are plain PyTorch table look-ups (one small table per device, indexed by packed code
byte and group shift or scale byte, so the exactness of the whole table is the exactness of every
element): a few memory passes over ``[M, K/2]``, no Triton. A fused quantize kernel that writes ``a8``
and ``row_scale`` (or the BF16 values) directly saves those passes; these functions are its reference.
"""

from __future__ import annotations

import functools

import torch

from fp4compile import formats, persistent
from fp4compile.kernels import HAS_TRITON
from fp4compile.quantized import GemmValues, QuantizedTensor, ScaleFormat

Operand = QuantizedTensor | GemmValues | torch.Tensor

MX_GROUP = 32
NV_GROUP = 16
FP8_HEADROOM = 6  # a row's largest E2M1 value, 6, lands on 6 * 2^6 = 384 <= 448 (E4M3 max)
FOLD_WINDOW = 14  # groups with e_g >= E_r - 14 fold exactly: 0.5 * 2^(6 - 14) = 2^-9, E4M3's min subnormal
_SCALED_MM_OUT = (torch.float32, torch.bfloat16, torch.float16)
_BF16_EXACT = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)
_NO_GROUP = -(2**20)  # exponent sentinel of a row without a nonzero code
_MIN_SHIFT = -13  # q * 2^shift is +-0 in E4M3 for every shift <= -13
_NAN_ROW = FP8_HEADROOM - _MIN_SHIFT + 1  # row of the fold table holding NaNs

# Counts over every fold since the last reset (gemm_nt folds both operands of an MXFP4 x MXFP4 GEMM, the
# quantize kernel folds what it writes in the FP8 form):
#   groups folded (a host int: launches made from Python; CUDA-graph replays do not add to it), and
#   unfoldable groups: a nonzero code more than 14 binades below their row's largest group (rounded in E4M3
#   instead of exact), accumulated on each device in one int64 counter that kernels add to directly (no
#   extra launch, no host sync). Read them with fold_stats() (which syncs), reset with reset_fold_stats().
# Updating them is a side effect: call these functions eagerly (or from a custom op), not inside a graph
# that torch.compile traces.
_GROUPS = [0]
_UNFOLDABLE: dict[torch.device, torch.Tensor] = {}


def unfoldable_counter(device: torch.device) -> torch.Tensor:
    """The device's unfoldable-group counter (int64 [1]; kernels atomically add to it)."""
    device = torch.device(device)
    if device not in _UNFOLDABLE:
        _UNFOLDABLE[device] = persistent.make(device, lambda: torch.zeros(1, dtype=torch.int64, device=device))
    return _UNFOLDABLE[device]


def fold_stats() -> dict[str, int]:
    """``{"groups": folded groups, "unfoldable_groups": of which not exact}`` since the last reset (syncs)."""
    return {"groups": _GROUPS[0], "unfoldable_groups": sum(int(c.item()) for c in _UNFOLDABLE.values())}


def reset_fold_stats() -> None:
    _GROUPS[0] = 0
    for counter in _UNFOLDABLE.values():
        counter.zero_()


def record_folds(groups: int, unfoldable: torch.Tensor | None = None) -> None:
    """Count ``groups`` folded; add ``unfoldable`` (a device count) unless the kernel added it itself."""
    _GROUPS[0] += groups
    if unfoldable is not None:
        unfoldable_counter(unfoldable.device).add_(unfoldable.reshape(1))


# ----------------------------------------------------------------------------------------------
# Operand conversions
# ----------------------------------------------------------------------------------------------


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """Exact float32 ``2**e`` for integer ``e`` (clamped to [-149, 127]; FP32 subnormals included)."""
    e = e.to(torch.int32).clamp(-149, 127)
    normal = (e + 127) << 23  # exponent field of 2**e, e >= -126
    subnormal = torch.ones_like(e) << (e + 149).clamp(0, 22)  # mantissa bit of 2**e, e < -126
    return torch.where(e >= -126, normal, subnormal).view(torch.float32)


def _check_packed(codes: torch.Tensor, scales: torch.Tensor, group_size: int, what: str) -> None:
    if codes.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError(f"{what}: codes and scales must be uint8, got {codes.dtype} and {scales.dtype}")
    if codes.shape[:-1] != scales.shape[:-1] or codes.shape[-1] * 2 != scales.shape[-1] * group_size:
        raise ValueError(
            f"{what}: codes {tuple(codes.shape)} (packed, K/2 per row) and scales {tuple(scales.shape)} "
            f"(K/{group_size} per row) do not describe the same [..., K] tensor"
        )


def _pair_values(device: torch.device) -> torch.Tensor:
    """E2M1 values of the two elements of every packed byte: ``[256, 2]`` float32 (element 2i first)."""
    byte = torch.arange(256, dtype=torch.int32, device=device).to(torch.uint8)
    return formats.e2m1_decode(formats.unpack_e2m1(byte[:, None]))


def _fp8_table(device: torch.device) -> torch.Tensor:
    """``[21 * 256]`` int16: the two E4M3 bytes of ``q * 2^shift`` for each packed code byte, rows shift = 6 .. -13,
    then a NaN row. Every shift below -13 gives the same bytes as -13 (+-0: 6 * 2^-13 rounds to 0 in E4M3)."""
    def build() -> torch.Tensor:
        shifts = torch.arange(FP8_HEADROOM, _MIN_SHIFT - 1, -1, device=device)  # [20]: 6, 5, ..., -13
        values = _pair_values(device)[None] * _pow2(shifts)[:, None, None]  # [20, 256, 2] f32, exact
        values = torch.cat([values, torch.full_like(values[:1], float("nan"))])  # [21, 256, 2]
        return values.to(torch.float8_e4m3fn).view(torch.uint8).view(torch.int16).reshape(-1)

    return persistent.cached(("fp8 table",), device, build)


def _bf16_table(device: torch.device) -> torch.Tensor:
    """``[256 * 256]`` int32: the two bf16 values ``q * s8`` (exact) for each (E4M3 scale byte, packed code byte)."""
    def build() -> torch.Tensor:
        s8 = formats.e4m3_decode(torch.arange(256, dtype=torch.int32, device=device).to(torch.uint8))  # [256]
        values = s8[:, None, None] * _pair_values(device)[None]  # [256 scales, 256 bytes, 2] f32
        return values.to(torch.bfloat16).view(torch.int32).reshape(-1)

    return persistent.cached(("bf16 table",), device, build)


def _group_facts(codes: torch.Tensor, scales: torch.Tensor, group_size: int):
    """(packed [M, G, gs/2], nonzero [M, G], NaN scale [M, G], e_g int32 [M, G]) of MXFP4 codes [M, K/2] and scales [M, G]."""
    packed = codes.reshape(codes.shape[0], -1, group_size // 2)  # [M, G, gs/2]
    byte = scales.to(torch.int32)  # [M, G]
    nan_g = byte == formats.E8M0_NAN_BYTE  # [M, G]
    nonzero = ((packed & 0x77) != 0).any(-1) & ~nan_g  # [M, G]: groups that hold a nonzero value
    return packed, nonzero, nan_g, byte - formats.E8M0_BIAS  # e_g: byte 0 is 2^-127


def row_exponents(codes: torch.Tensor, scales: torch.Tensor, group_size: int = MX_GROUP) -> torch.Tensor:
    """E_r [M, 1] (int32) of the FP8 fold: each row's largest scale exponent over the groups that hold a nonzero code and
    a scale above 2^-127; ``FP8_HEADROOM`` (row scale 1) for a row without one."""
    _, nonzero, _, e_g = _group_facts(codes, scales, group_size)
    return _row_exponents(nonzero, e_g)


def _row_exponents(nonzero: torch.Tensor, e_g: torch.Tensor) -> torch.Tensor:
    """:func:`row_exponents` from the groups' facts (``_group_facts``)."""
    masked = torch.where(nonzero & (e_g > -formats.E8M0_BIAS), e_g, _NO_GROUP)
    e_r = torch.cat([masked, torch.full_like(masked[:, :1], _NO_GROUP)], -1).amax(-1, keepdim=True)  # [M, 1]
    return torch.where(e_r == _NO_GROUP, FP8_HEADROOM, e_r)


def _fold(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fold_mxfp4_fp8` with the unfoldable count left on the device (0-dim int64); records it in fold_stats."""
    if codes.dim() != 2:
        raise ValueError(f"fold_mxfp4_fp8 takes 2-D codes [M, K/2], got shape {tuple(codes.shape)}")
    _check_packed(codes, scales, group_size, "fold_mxfp4_fp8")
    m = codes.shape[0]
    packed, nonzero, nan_g, e_g = _group_facts(codes, scales, group_size)
    e_r = _row_exponents(nonzero, e_g)  # [M, 1]
    row = FP8_HEADROOM - (e_g - e_r + FP8_HEADROOM).clamp(_MIN_SHIFT, FP8_HEADROOM)  # [M, G]: table row 0..19
    row = torch.where(nan_g, _NAN_ROW, row)  # a NaN scale makes its group NaN, as in block_values
    index = (row * 256)[..., None] + packed.to(torch.int32)  # [M, G, gs/2]
    a8 = _fp8_table(codes.device)[index].view(torch.uint8).reshape(m, -1).view(torch.float8_e4m3fn)  # [M, K]
    row_scale = _pow2(e_r - FP8_HEADROOM)  # [M, 1] f32
    unfoldable = (nonzero & (e_g < e_r - FOLD_WINDOW)).sum()  # 0-dim int64
    record_folds(scales.numel(), unfoldable)
    return a8, row_scale, unfoldable


def fold_mxfp4_fp8(codes: torch.Tensor, scales: torch.Tensor, group_size: int = MX_GROUP) -> tuple[torch.Tensor, torch.Tensor, int]:
    """MXFP4 ``(codes u8 [M, K/2], E8M0 scales u8 [M, K/32])`` -> ``(a8 e4m3 [M, K], row_scale f32 [M, 1], n_unfoldable)``.

    ``a8.float() * row_scale`` equals the block values (``e2m1 * 2^e_g``) bit for bit in every group with
    ``e_g >= E_r - 14``; the other groups that hold a nonzero code are rounded to nearest in E4M3 and
    counted in ``n_unfoldable`` (and in :func:`fold_stats`). A NaN scale (0xFF) makes its group NaN in
    ``a8``; rows without a nonzero code get ``a8 = 0`` and ``row_scale = 1``. Returning the count as an
    int synchronizes with the device; :func:`gemm_nt` does not.
    """
    a8, row_scale, unfoldable = _fold(codes, scales, group_size)
    return a8, row_scale, int(unfoldable)


def nvfp4_to_bf16(codes: torch.Tensor, scales: torch.Tensor, group_size: int = NV_GROUP) -> torch.Tensor:
    """NVFP4 ``(codes u8 [..., K/2], E4M3 scales u8 [..., K/16])`` -> bf16 ``[..., K]`` equal to ``e2m1 * s8``.

    Exact: ``e2m1 * s8`` has at most 6 significant bits and lies in [2^-10, 2688]. The tensor scale is
    not applied (it is part of the GEMM's alpha). A NaN scale (0x7F / 0xFF) gives a NaN group.
    """
    _check_packed(codes, scales, group_size, "nvfp4_to_bf16")
    packed = codes.reshape(*scales.shape, group_size // 2)  # [..., G, gs/2]
    index = (scales.to(torch.int32) * 256)[..., None] + packed.to(torch.int32)  # [..., G, gs/2]
    pairs = _bf16_table(codes.device)[index]  # [..., G, gs/2] int32: two bf16 each
    return pairs.view(torch.bfloat16).reshape(*codes.shape[:-1], -1)  # [..., K]


def _is_bf16_exact(op: Operand) -> bool:
    if isinstance(op, GemmValues):
        return op.row_scale is None
    return isinstance(op, QuantizedTensor) or op.dtype in _BF16_EXACT


def _bf16_values(op: Operand) -> torch.Tensor:
    """Values a GEMM multiplies, exactly, in bf16 ``[..., K]`` (only for operands where that is exact)."""
    if isinstance(op, GemmValues):
        return op.values  # the kernel's exact BF16 form
    if not isinstance(op, QuantizedTensor):
        return op.to(torch.bfloat16)
    if op.scale_format is ScaleFormat.E4M3:
        if _use_kernels(op.codes):
            from fp4compile.kernels.fold import block_values_bf16 as to_bf16_kernel

            return to_bf16_kernel(op.codes, op.scales, op.group_size, e8m0=False)
        return nvfp4_to_bf16(op.codes, op.scales, op.group_size)
    return op.block_values().to(torch.bfloat16)  # e2m1 * 2^e: 2 significant bits, FP32's exponent range


def block_values_bf16(q: QuantizedTensor) -> torch.Tensor:
    """``e2m1 * group scale`` of a quantized operand in BF16, exactly (the tensor scale and factor not applied)."""
    return _bf16_values(q)


def _f32_values(op: Operand) -> torch.Tensor:
    return op.block_values() if isinstance(op, (QuantizedTensor, GemmValues)) else op.float()


def _alpha(a: Operand, b: Operand) -> torch.Tensor | float:
    """``alpha_a * alpha_b`` as the reference forms it (a float32 device scalar, or 1.0)."""
    a_alpha = a.alpha if isinstance(a, (QuantizedTensor, GemmValues)) else 1.0
    b_alpha = b.alpha if isinstance(b, (QuantizedTensor, GemmValues)) else 1.0
    return a_alpha * b_alpha


def _inner_dim(op: Operand) -> int:
    return op.shape[-1]


# ----------------------------------------------------------------------------------------------
# GEMMs
# ----------------------------------------------------------------------------------------------


@functools.cache
def _cpu_rowwise_scaled_mm() -> bool:
    """Whether this torch's CPU ``_scaled_mm`` takes row-wise FP8 scales (2.13 does, 2.11 does not)."""
    ones = torch.ones(16, 32).to(torch.float8_e4m3fn)  # [16, K]
    try:
        out = torch._scaled_mm(ones, ones.t(), scale_a=torch.ones(16, 1), scale_b=torch.full((1, 16), 2.0), out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    return bool((out == 64.0).all())


def fp8_gemm_available(device: torch.device) -> bool:
    """Whether ``torch._scaled_mm`` with row-wise FP8 scales runs on ``device`` (CUDA sm_89+, or a capable CPU torch)."""
    if device.type == "cpu":
        return _cpu_rowwise_scaled_mm()
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return False


def _takes_fp8_path(a: Operand, b: Operand) -> bool:
    if isinstance(a, GemmValues) or isinstance(b, GemmValues):  # already in the form its kernel chose
        return all(isinstance(op, GemmValues) and op.row_scale is not None for op in (a, b))
    ops = (a, b)
    if not all(isinstance(op, QuantizedTensor) and op.scale_format is ScaleFormat.E8M0 for op in ops):
        return False
    if a.group_size != b.group_size or a.shape[-1] == 0 or a.codes.device != b.codes.device:
        return False
    return fp8_gemm_available(a.codes.device)


def _pad_rows(x: torch.Tensor, multiple: int, fill: float) -> torch.Tensor:
    """Append rows of ``fill`` to ``x [N, ...]`` up to a multiple of ``multiple`` rows."""
    pad = -x.shape[0] % multiple
    if not pad:
        return x
    return torch.cat([x, torch.full((pad, *x.shape[1:]), fill, dtype=x.dtype, device=x.device)])


def _use_kernels(t: torch.Tensor) -> bool:
    """The Triton conversion kernels (kernels/fold.py) on CUDA; these torch functions are their twins."""
    return t.is_cuda and HAS_TRITON


def _fold_any(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_kernels(codes):
        from fp4compile.kernels.fold import fold_mxfp4_fp8 as fold_kernel

        a8, e_r, count = fold_kernel(codes, scales, group_size)
        record_folds(scales.numel(), count.sum())
        return a8, _pow2(e_r - FP8_HEADROOM)
    a8, row_scale, _ = _fold(codes, scales, group_size)
    return a8, row_scale


def _gemm_fp8(a: QuantizedTensor, b: QuantizedTensor, out_dtype: torch.dtype) -> torch.Tensor:
    """MXFP4 x MXFP4 as one row-wise scaled FP8 GEMM; ``a [..., K]``, ``b [N, K]`` -> ``[..., N]``."""
    if isinstance(a, GemmValues):  # folded by the quantize kernel
        a8, sa, b8, sb = a.values, a.row_scale, b.values, b.row_scale
    else:
        gs = a.group_size
        a8, sa = _fold_any(a.codes.reshape(-1, a.codes.shape[-1]), a.scales.reshape(-1, a.scales.shape[-1]), gs)  # [M, K], [M, 1]
        b8, sb = _fold_any(b.codes, b.scales, gs)  # [N, K], [N, 1]
    n = b8.shape[0]
    b8 = _pad_rows(b8, 16, 0.0)  # [N16, K]: _scaled_mm needs N % 16 == 0
    sb = _pad_rows(sb, 16, 1.0)  # [N16, 1]
    alpha = _alpha(a, b)
    # [M, 1] f32; alpha stays on the device. A host alpha of exactly 1 (QuEST x QuEST: the forward GEMMs) costs no launch
    one = (isinstance(alpha, float) and alpha == 1.0) or (isinstance(alpha, torch.Tensor) and alpha.device.type == "cpu" and float(alpha) == 1.0)
    scale_a = sa.contiguous() if one else (sa * alpha).contiguous()
    mm_dtype = out_dtype if out_dtype in _SCALED_MM_OUT else torch.float32
    out = torch._scaled_mm(a8, b8.t(), scale_a=scale_a, scale_b=sb.reshape(1, -1), out_dtype=mm_dtype, use_fast_accum=False)
    return out[:, :n].contiguous().to(out_dtype).reshape(*a.shape[:-1], n)  # [..., N]


def _mm_f32_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [M, K] @ b [N, K]^T`` of bf16 operands with float32 output (no bf16 rounding of the result)."""
    if a.is_cuda:
        return torch.mm(a, b.t(), out_dtype=torch.float32)  # cuBLAS bf16 GEMM, f32 accumulation and output
    return a.float() @ b.float().t()  # same products and f32 accumulation (no bf16 -> f32 mm on the CPU)


def _accumulate_exact(a: Operand, b: Operand) -> torch.Tensor:
    """Exact products, f32 accumulation, no alpha: ``[..., N]`` f32 from bf16 operands when exact, else float32."""
    k = _inner_dim(a)
    if _is_bf16_exact(a) and _is_bf16_exact(b):
        a_val, b_val = _bf16_values(a), _bf16_values(b)  # [..., K], [N, K]
        out = _mm_f32_out(a_val.reshape(-1, k), b_val)  # [M, N] f32
    else:
        a_val, b_val = _f32_values(a), _f32_values(b)
        out = a_val.reshape(-1, k) @ b_val.t()  # [M, N] f32
    return out.reshape(*a_val.shape[:-1], b_val.shape[0])


def _check_operands(a: Operand, b: Operand) -> None:
    if _inner_dim(a) != _inner_dim(b):
        raise ValueError(f"gemm_nt: inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}^T")
    if len(b.shape) != 2:
        raise ValueError(f"gemm_nt: the second operand must be 2-D [N, K], got shape {tuple(b.shape)}")


def gemm_accumulate(a: Operand, b: Operand, fp8_out_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor | float | None]:
    """``a @ b^T`` and the alpha still to multiply, for callers that fuse alpha into their epilogue.

    The FP8 path applies alpha inside the GEMM (in the row scales) and returns ``(out in fp8_out_dtype, None)``;
    the exact path returns ``(float32 accumulator, alpha_a * alpha_b)``.
    """
    _check_operands(a, b)
    if _takes_fp8_path(a, b):
        return _gemm_fp8(a, b, fp8_out_dtype), None
    return _accumulate_exact(a, b), _alpha(a, b)


def gemm_nt(a: Operand, b: Operand, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``a [..., K] @ b [N, K]^T * alpha_a * alpha_b`` -> ``out_dtype [..., N]`` (contract of the reference ``gemm_nt``).

    MXFP4 x MXFP4 (any E8M0 pair of one group size) runs as a row-wise scaled FP8 GEMM (accumulation
    error up to a few 1e-4 relative on Hopper, not bit-exact); every other pair as an exact-product GEMM.
    """
    _check_operands(a, b)
    if _takes_fp8_path(a, b):
        return _gemm_fp8(a, b, out_dtype)
    return (_accumulate_exact(a, b) * _alpha(a, b)).to(out_dtype)
