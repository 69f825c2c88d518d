"""Blackwell (compute capability 10.x) lowering of an FP4 GEMM site to the native block-scaled FP4 GEMM.

UNTESTED ON HARDWARE. No Blackwell GPU was available when this was written: everything here that can
run without one (operand layout, the call it builds, the capability check, torch's own shape checks on
the ``meta`` device) is tested on the CPU; the GEMM itself has never run. Treat the first run on a
B200/GB200/B300 as the test of this file (``tests/kernels/test_blackwell_layout.py`` has the GPU test).

Why a separate lowering: B200-class tensor cores multiply E2M1 operands with per-group scales in
hardware (tcgen05 block-scaled MMA; cuBLASLt ``VEC32_UE8M0`` for MXFP4, ``VEC16_UE4M3`` for NVFP4), so
the reference's ``e2m1 * group scale`` products never have to be materialized. The contract is that of
:func:`fp4compile.reference.gemm.gemm_nt`::

    out[M, N] = (A_blk[M, K] @ B_blk[N, K]^T) * (alpha_A * alpha_B)        # FP32 accumulation

What the hardware wants, and how a :class:`~fp4compile.quantized.QuantizedTensor` maps onto it:

* data: ``torch.float4_e2m1fn_x2`` ``[M, K/2]``, a dtype view of the packed codes (no copy): both use
  element ``2i`` in the low nibble. The dtype supports no casts, and ``.t()`` swaps *bytes* (element
  pairs along K stay together), which is exactly the column-major ``[K/2, N]`` the second operand needs.
* scales: one byte per group, E8M0 (``float8_e8m0fnu``, MXFP4, group 32) or E4M3 (``float8_e4m3fn``,
  NVFP4, group 16; read as unsigned UE4M3, so scale bytes must be non-negative, which ours are), in
  the 128x4 blocked ("swizzled", ``SWIZZLE_32_4_4``) layout of :func:`fp4compile.formats.to_blocked`,
  zero-padded to ``round_up(rows, 128) * round_up(K / group, 4)`` bytes, flat and contiguous.
* alpha: ``tensor_scale * factor`` of each operand. NVFP4's two-level recipe of
  ``torch.nn.functional.scaled_mm`` takes it as the per-tensor (``TensorWise``) scale and cuBLASLt
  applies ``alpha_A * alpha_B`` to the FP32 accumulator in the epilogue: one rounding, as in the
  reference. MX scaling has no per-tensor scale, so for MXFP4 alpha is applied to the GEMM's output.

The calls, per torch version (feature-detected: :func:`default_api`)::

    # NVFP4 x NVFP4 -> cuBLASLt VEC16_UE4M3, alpha in the epilogue, writes out_dtype (bf16/fp16/fp32)
    out = F.scaled_mm(a_fp4 [M, K/2], b_fp4.t() [K/2, N],
                      [scale_a e4m3 [Mp*Kg4], alpha_a], [ScalingType.BlockWise1x16, ScalingType.TensorWise],
                      [scale_b e4m3 [Np*Kg4], alpha_b], [ScalingType.BlockWise1x16, ScalingType.TensorWise],
                      swizzle_a=[SwizzleType.SWIZZLE_32_4_4, SwizzleType.NO_SWIZZLE], swizzle_b=(same),
                      output_dtype=out_dtype)

    # MXFP4 x MXFP4 -> FBGEMM GenAI / MSLK f4f4bf16 (CUTLASS), which writes BF16 only
    acc = F.scaled_mm(a_fp4, b_fp4.t(), scale_a e8m0 [Mp*Kg4], ScalingType.BlockWise1x32,
                      scale_b e8m0 [Np*Kg4], ScalingType.BlockWise1x32,
                      swizzle_a=SwizzleType.SWIZZLE_32_4_4, swizzle_b=SwizzleType.SWIZZLE_32_4_4,
                      output_dtype=torch.bfloat16)
    out = (acc.float() * (alpha_a * alpha_b)).to(out_dtype)

    # api=ScaledMmApi.LEGACY (torches without F.scaled_mm, or forced): scales implied by dtype and size
    acc = torch._scaled_mm(a_fp4, b_fp4.t(), scale_a, scale_b, out_dtype=torch.float32, use_fast_accum=False)
    out = (acc * (alpha_a * alpha_b)).to(out_dtype)

* torch 2.11 (the GPU machine, 2.11.0+cu130, checked on an H100): ``F.scaled_mm`` with these enums
  exists. ``torch._scaled_mm`` refuses FP4 data with E8M0 scales on CUDA ("Invalid scaling
  configuration": its FP4 + E8M0 branch is ROCm-only there), so MXFP4 must use ``F.scaled_mm``, whose
  MXFP4 branch is compiled in (it stopped at its B200/B300-only check, not at "CUDA+FBGEMM_GENAI only").
  NVFP4 passed torch's checks through both entry points and reached cuBLASLt (which refuses it on sm_90).
* torch 2.13 (this machine, CPU build): the same Python API; torch's meta kernels accept every call built
  here. Newer PyTorch sources also route FP4 + E8M0 through ``torch._scaled_mm`` to cuBLASLt
  (``VEC32_UE8M0``); whether 2.13's CUDA build does is not checked, so MXFP4 stays on ``F.scaled_mm``.

Costs of the MXFP4 path, unverified on hardware: its BF16-only output means alpha (16/9 for Tseng's
3/4 rule) multiplies an accumulator already rounded to BF16, one rounding more than the reference
(<= 2**-9 relative; a float32 out_dtype still gets BF16 precision). Shape limits (torch's checks): K a
multiple of 32 (K/2 bytes a multiple of 16; torch's own NVFP4 tests skip other K for cuBLAS) and N a
multiple of 16; M is free. FBGEMM's kernel may want more; not checked.

Other sites (a high-precision operand, MXFP4 x NVFP4, other group sizes) are not this lowering's: they
raise, naming the operand; the kernel selector sends them elsewhere. On a machine that is not 10.x,
:func:`gemm_nt` raises :class:`BlackwellUnavailableError` and never falls back on its own.

How the backend uses it (the ``blackwell`` kernel target, lowering/select.py): the layout plan gives the form
``fp4`` to every GEMM whose two quantizers this GEMM takes; the quantize kernels then write the packed codes and,
in the same launch, the scale bytes in the blocked layout (no ``to_blocked`` pass), as an :class:`Fp4Operand`;
:func:`gemm_operands` multiplies two of them. ``kernels="auto"`` picks the target on a 10.x GPU only after
:func:`native_gemm_problem` has run one small MXFP4 and one NVFP4 GEMM there and found them equal to the
reference; otherwise it keeps the Hopper lowering (FP8 / BF16 GEMMs), which runs on 10.x as well.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

import torch

from fp4compile import formats
from fp4compile.quantized import QuantizedTensor, ScaleFormat

BLACKWELL_MAJOR = 10  # B200 / GB200 = 10.0, B300 = 10.3; consumer Blackwell (12.x) is not covered
MXFP4_GROUP = 32
NVFP4_GROUP = 16
K_MULTIPLE = 32  # K/2 bytes of float4_e2m1fn_x2 must be a multiple of 16 (torch's _scaled_mm check)
N_MULTIPLE = 16  # mat_b [K/2, N]: N a multiple of 16 (torch's _scaled_mm check)
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# torch's scaled_gemm sets no CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*, so cuBLASLt may pick algorithms that
# assume its default of 256-byte aligned pointers: a GPU operand that is not gets a fresh copy.
_CUDA_ALIGNMENT = 256


class Fp4Recipe(str, Enum):
    MXFP4 = "mxfp4"  # E2M1 + E8M0 scale per 32 (OCP MX); cuBLASLt VEC32_UE8M0
    NVFP4 = "nvfp4"  # E2M1 + E4M3 scale per 16 + FP32 tensor scale; cuBLASLt VEC16_UE4M3


class ScaledMmApi(str, Enum):
    LEGACY = "torch._scaled_mm"  # scales inferred from dtype and size, swizzle implied; no MXFP4 on CUDA in 2.11
    FUNCTIONAL = "torch.nn.functional.scaled_mm"  # explicit ScalingType / SwizzleType, lists per operand


class BlackwellUnavailableError(RuntimeError):
    """The native FP4 GEMM needs a CUDA GPU of compute capability 10.x, and this device is not one."""


# ----------------------------------------------------------------------------------------------
# Capability check
# ----------------------------------------------------------------------------------------------


def _cuda_device(device: torch.device | str | int | None) -> torch.device | None:
    """The CUDA device meant by ``device`` (None: the current one), or None if it is not a CUDA device."""
    if device is None:
        return torch.device("cuda", torch.cuda.current_device())
    if isinstance(device, int):
        return torch.device("cuda", device)
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def is_blackwell(device: torch.device | str | int | None = None) -> bool:
    """True when ``device`` (default: the current CUDA device) is a GPU of compute capability 10.x."""
    if not torch.cuda.is_available():
        return False
    cuda = _cuda_device(device)
    return cuda is not None and torch.cuda.get_device_capability(cuda)[0] == BLACKWELL_MAJOR


def check_blackwell(device: torch.device | str | int | None = None) -> tuple[int, int]:
    """Raise :class:`BlackwellUnavailableError` unless ``device`` is 10.x; return its capability."""
    need = "the native block-scaled FP4 GEMM (lowering.blackwell) needs an NVIDIA GPU of compute capability 10.x (B200, GB200, B300)"
    instead = "use kernels='auto' or 'reference' (or the Hopper lowering on 9.x); lowering.blackwell never falls back on its own"
    if not torch.cuda.is_available():
        where = f"the operands are on {torch.device(device)} and " if device is not None and not isinstance(device, int) else ""
        raise BlackwellUnavailableError(f"{need}; {where}this machine has no CUDA GPU (torch.cuda.is_available() is False); {instead}")
    cuda = _cuda_device(device)
    if cuda is None:
        raise BlackwellUnavailableError(f"{need}; the operands are on {torch.device(device)}, not on a CUDA device; {instead}")
    major, minor = torch.cuda.get_device_capability(cuda)
    if major != BLACKWELL_MAJOR:
        name = torch.cuda.get_device_name(cuda)
        note = " (consumer Blackwell: torch's MXFP4 GEMM runs on 10.x only)" if major == 12 else ""
        raise BlackwellUnavailableError(f"{need}; {cuda} is {name} with compute capability {major}.{minor}{note}; {instead}")
    return major, minor


# ----------------------------------------------------------------------------------------------
# Operands
# ----------------------------------------------------------------------------------------------


class Fp4Operand(NamedTuple):
    """One GEMM operand in the hardware's form: what :func:`as_fp4_operand` builds from a QuantizedTensor, and
    what the quantize kernels write directly for the ``blackwell`` target (``kernels.quantize.quantize_for_gemm``,
    form ``"fp4"``)."""

    data: torch.Tensor  # float4_e2m1fn_x2 [M, K/2], row-major, element 2i in the low nibble
    scales_blocked: torch.Tensor  # float8_e8m0fnu / float8_e4m3fn [round_up(M,128) * round_up(K/g,4)], 128x4 blocked
    alpha: torch.Tensor  # float32 [], tensor_scale * factor, applied after the K reduction

    @property
    def recipe(self) -> Fp4Recipe:
        return Fp4Recipe.MXFP4 if self.scales_blocked.dtype == torch.float8_e8m0fnu else Fp4Recipe.NVFP4

    @property
    def shape(self) -> torch.Size:
        """``[M, K]`` in elements."""
        return torch.Size((self.data.shape[0], 2 * self.data.shape[1]))


def fp4_operand(codes: torch.Tensor, scales_blocked: torch.Tensor, scale_format: ScaleFormat, alpha: torch.Tensor) -> Fp4Operand:
    """Packed codes ``[M, K/2]`` (uint8) and flat blocked scale bytes (uint8) as the hardware's operand: dtype views,
    no copy (a copy only where :func:`_hardware_ready` needs one)."""
    _require_dtypes()
    k_groups = 2 * codes.shape[-1] // (MXFP4_GROUP if scale_format is ScaleFormat.E8M0 else NVFP4_GROUP)
    rows_p, cols_p = formats.blocked_shape(codes.shape[0], k_groups)
    if codes.dim() != 2 or codes.dtype != torch.uint8 or scales_blocked.dtype != torch.uint8 or scales_blocked.numel() != rows_p * cols_p:
        raise ValueError(
            f"fp4_operand: codes must be uint8 [M, K/2] and the blocked scales uint8 of round_up(M,128) * round_up(K/g,4) bytes; "
            f"got codes {codes.dtype}{list(codes.shape)} and scales {scales_blocked.dtype}{list(scales_blocked.shape)} "
            f"(expected {rows_p * cols_p} bytes)"
        )
    scale_dtype = torch.float8_e8m0fnu if scale_format is ScaleFormat.E8M0 else torch.float8_e4m3fn
    data = _hardware_ready(codes).view(torch.float4_e2m1fn_x2)
    return Fp4Operand(data, _hardware_ready(scales_blocked.reshape(-1)).view(scale_dtype), alpha.reshape(()).to(torch.float32))


def _require_dtypes() -> None:
    missing = [n for n in ("float4_e2m1fn_x2", "float8_e8m0fnu", "float8_e4m3fn") if not hasattr(torch, n)]
    if missing:
        raise RuntimeError(
            f"lowering.blackwell needs torch dtypes {missing}, missing from torch {torch.__version__}; install torch >= 2.11"
        )


def fp4_recipe(q: QuantizedTensor) -> Fp4Recipe:
    """The hardware recipe of ``q``, or a ValueError for formats the native GEMM does not take."""
    if q.scale_format is ScaleFormat.E8M0 and q.group_size == MXFP4_GROUP:
        return Fp4Recipe.MXFP4
    if q.scale_format is ScaleFormat.E4M3 and q.group_size == NVFP4_GROUP:
        return Fp4Recipe.NVFP4
    raise ValueError(
        f"the native FP4 GEMM takes MXFP4 (E8M0 scales, groups of {MXFP4_GROUP}) or NVFP4 (E4M3 scales, groups of "
        f"{NVFP4_GROUP}); this operand has {q.scale_format.value} scales in groups of {q.group_size}"
    )


def _hardware_ready(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when contiguous (and 256-byte aligned on a GPU), else a contiguous copy."""
    if t.is_contiguous() and (t.device.type != "cuda" or t.data_ptr() % _CUDA_ALIGNMENT == 0):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def as_fp4_operand(q: QuantizedTensor) -> Fp4Operand:
    """``q`` as (float4 data ``[M, K/2]``, blocked scales, alpha); leading dimensions fold into M.

    Pure layout, runs on any device: the data is a dtype view of ``q.codes`` (a copy only when the
    codes are not contiguous, or on a GPU not 256-byte aligned); the scales are re-laid out by
    :func:`fp4compile.formats.to_blocked` (a new tensor of the padded size, padding bytes 0).
    """
    _require_dtypes()
    recipe = fp4_recipe(q)
    codes, scales = q.codes, q.scales
    if codes.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError(f"QuantizedTensor codes and scales must be uint8 bytes, got {codes.dtype} and {scales.dtype}")
    if codes.dim() < 2:
        raise ValueError(f"a GEMM operand needs at least 2 dimensions [..., K/2], got codes of shape {tuple(codes.shape)}")
    half_k = codes.shape[-1]
    groups = 2 * half_k // q.group_size
    if 2 * half_k % q.group_size or scales.shape != (*codes.shape[:-1], groups):
        raise ValueError(
            f"{recipe.value}: codes {tuple(codes.shape)} (K = {2 * half_k}) need scales of shape "
            f"{(*codes.shape[:-1], groups)} (one per {q.group_size} elements), got {tuple(scales.shape)}"
        )
    codes2d = codes.reshape(-1, half_k)  # [M, K/2]
    scales2d = scales.reshape(-1, groups)  # [M, K/g]
    return fp4_operand(codes2d, formats.to_blocked(scales2d), q.scale_format, q.alpha)  # blocked: [round_up(M,128) * round_up(K/g,4)]


# ----------------------------------------------------------------------------------------------
# The call
# ----------------------------------------------------------------------------------------------


def _functional_enums() -> tuple[Any, Any] | None:
    """(ScalingType, SwizzleType) of ``torch.nn.functional.scaled_mm`` if this torch has the API."""
    fn = torch.nn.functional
    if not (callable(getattr(fn, "scaled_mm", None)) and hasattr(fn, "ScalingType") and hasattr(fn, "SwizzleType")):
        return None
    scaling, swizzle = fn.ScalingType, fn.SwizzleType
    needed = [(scaling, n) for n in ("BlockWise1x16", "BlockWise1x32", "TensorWise")] + [
        (swizzle, n) for n in ("SWIZZLE_32_4_4", "NO_SWIZZLE")
    ]
    return (scaling, swizzle) if all(hasattr(e, n) for e, n in needed) else None


def has_functional_scaled_mm() -> bool:
    """Whether this torch has ``torch.nn.functional.scaled_mm`` with the enums the FP4 recipes need."""
    return _functional_enums() is not None


def default_api(recipe: Fp4Recipe) -> ScaledMmApi:
    """The entry point used for ``recipe`` on this torch: ``F.scaled_mm`` wherever it exists (on torch 2.11
    the only one that takes MXFP4 on CUDA), else ``torch._scaled_mm``. Same answer for both recipes today;
    the recipe is an argument because the two have diverged across releases."""
    return ScaledMmApi.FUNCTIONAL if has_functional_scaled_mm() else ScaledMmApi.LEGACY


def _layout(t: torch.Tensor) -> str:
    if t.dim() == 2 and t.stride() == (t.shape[1], 1):
        return " row-major"
    if t.dim() == 2 and t.stride() == (1, t.shape[0]):
        return " col-major"
    return ""


def _tensor_text(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}{_layout(t)}"


@dataclass(frozen=True, eq=False)
class ScaledMmCall:
    """One native FP4 GEMM call, fully described: what :meth:`execute` passes to torch, and why.

    ``out = (gemm(mat_a, mat_b).float() * alpha).to(out_dtype).reshape(out_shape)``, the GEMM writing
    ``gemm_dtype``; ``alpha`` is None where the GEMM's epilogue applies it (NVFP4 two-level recipe), and
    then the GEMM writes ``out_dtype`` itself.
    """

    api: ScaledMmApi
    recipe: Fp4Recipe
    mat_a: torch.Tensor  # float4_e2m1fn_x2 [M, K/2], row-major
    mat_b: torch.Tensor  # float4_e2m1fn_x2 [K/2, N], column-major (= b's codes [N, K/2], transposed)
    scale_a: tuple[torch.Tensor, ...]  # (blocked group scales [Mp * Kg4], [alpha_a float32 []])
    scale_b: tuple[torch.Tensor, ...]  # (blocked group scales [Np * Kg4], [alpha_b float32 []])
    scale_recipe_a: tuple[Any, ...]  # ScalingType per entry of scale_a (FUNCTIONAL only; () for LEGACY)
    scale_recipe_b: tuple[Any, ...]
    swizzle_a: tuple[Any, ...]  # SwizzleType per entry of scale_a (FUNCTIONAL only; () for LEGACY)
    swizzle_b: tuple[Any, ...]
    gemm_dtype: torch.dtype  # what the GEMM writes: out_dtype (alpha in the epilogue), float32 or bf16 (MXFP4)
    out_dtype: torch.dtype
    alpha: torch.Tensor | None  # float32 [], alpha_a * alpha_b applied after the GEMM; None: in the epilogue
    out_shape: tuple[int, ...]  # a's leading dimensions + (N,)

    @property
    def mnk(self) -> tuple[int, int, int]:
        return self.mat_a.shape[0], self.mat_b.shape[1], 2 * self.mat_a.shape[1]

    def to(self, device: torch.device | str) -> ScaledMmCall:
        """The same call on ``device`` (e.g. ``"meta"``: torch's shape checks without running a kernel)."""

        def move(t):
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self,
            mat_a=move(self.mat_a),
            mat_b=move(self.mat_b),
            scale_a=tuple(move(s) for s in self.scale_a),
            scale_b=tuple(move(s) for s in self.scale_b),
            alpha=move(self.alpha),
        )

    def execute(self) -> torch.Tensor:
        """Run the call as described (no capability check: :func:`gemm_nt` does that)."""
        if self.api is ScaledMmApi.FUNCTIONAL:
            out = torch.nn.functional.scaled_mm(
                self.mat_a,
                self.mat_b,
                list(self.scale_a),
                list(self.scale_recipe_a),
                list(self.scale_b),
                list(self.scale_recipe_b),
                swizzle_a=list(self.swizzle_a),
                swizzle_b=list(self.swizzle_b),
                output_dtype=self.gemm_dtype,
            )
        else:
            out = torch._scaled_mm(
                self.mat_a, self.mat_b, self.scale_a[0], self.scale_b[0], out_dtype=self.gemm_dtype, use_fast_accum=False
            )
        if self.alpha is not None:
            out = out.float() * self.alpha  # [M, N] * float32 []: the reference's epilogue, in float32
        return out.to(self.out_dtype).reshape(self.out_shape)

    def emulate(self) -> torch.Tensor:
        """The plain-PyTorch twin of :meth:`execute`: what the GEMM computes from these arguments, on any device.

        Decode each operand low nibble first, unblock its 128x4 scales, multiply a TensorWise scale in,
        accumulate in FP32 (exact products; the summation order differs from the tensor cores'), round to
        what the GEMM writes, then alpha. CPU tests run the ``blackwell`` lowering through this (no Blackwell
        GPU here); on a 10.x GPU ``execute`` is checked against the reference instead.
        """
        m, n, k = self.mnk
        group = MXFP4_GROUP if self.recipe is Fp4Recipe.MXFP4 else NVFP4_GROUP

        def values(rows_bytes: torch.Tensor, scales: tuple[torch.Tensor, ...], rows: int) -> torch.Tensor:
            elems = formats.e2m1_decode(formats.unpack_e2m1(rows_bytes.view(torch.uint8)))  # [rows, K]
            block = formats.from_blocked(scales[0].reshape(-1).view(torch.uint8), rows, k // group)
            decode = formats.e8m0_decode if scales[0].dtype == torch.float8_e8m0fnu else formats.e4m3_decode
            v = elems * decode(block).repeat_interleave(group, dim=-1)
            return v * scales[1] if len(scales) > 1 else v  # TensorWise global scale

        a_val = values(self.mat_a, self.scale_a, m)
        b_val = values(self.mat_b.t(), self.scale_b, n)  # mat_b [K/2, N] column-major -> b's rows [N, K/2]
        out = (a_val @ b_val.t()).to(self.gemm_dtype)  # [M, K] @ [K, N]: what the GEMM writes
        if self.alpha is not None:
            out = out.float() * self.alpha
        return out.to(self.out_dtype).reshape(self.out_shape)

    def describe(self) -> str:
        """The call as one line of text (for logs and the kernel-selection report)."""

        def scales(ts, recipes, swizzles):
            parts = []
            for i, t in enumerate(ts):
                extra = "".join(f" {e.name}" for e in (recipes[i : i + 1] + swizzles[i : i + 1]))
                parts.append(_tensor_text(t) + extra)
            return "[" + ", ".join(parts) + "]" if len(parts) > 1 else parts[0]

        args = [
            f"mat_a={_tensor_text(self.mat_a)}",
            f"mat_b={_tensor_text(self.mat_b)}",
            f"scale_a={scales(self.scale_a, self.scale_recipe_a, self.swizzle_a)}",
            f"scale_b={scales(self.scale_b, self.scale_recipe_b, self.swizzle_b)}",
            f"{'output_dtype' if self.api is ScaledMmApi.FUNCTIONAL else 'out_dtype'}={str(self.gemm_dtype).removeprefix('torch.')}",
        ]
        tail = " (alpha in the epilogue)" if self.alpha is None else " * alpha_a*alpha_b"
        return f"{self.recipe.value}: {self.api.value}({', '.join(args)}){tail} -> {str(self.out_dtype).removeprefix('torch.')}{list(self.out_shape)}"


def _operand(op, which: str) -> tuple[Fp4Operand, tuple[int, ...]]:
    """(the hardware operand, its leading dimensions) of a QuantizedTensor or an Fp4Operand."""
    if isinstance(op, Fp4Operand):
        return op, tuple(op.data.shape[:1])
    if not isinstance(op, QuantizedTensor):
        raise TypeError(
            f"the native FP4 GEMM multiplies two QuantizedTensors (or Fp4Operands); operand {which} is a plain "
            f"{type(op).__name__} ({getattr(op, 'dtype', '?')}): such sites belong to the reference or Hopper lowering"
        )
    return as_fp4_operand(op), tuple(op.shape[:-1])


def scaled_mm_args(a: QuantizedTensor | Fp4Operand, b: QuantizedTensor | Fp4Operand, out_dtype: torch.dtype, *, api: ScaledMmApi | None = None) -> ScaledMmCall:
    """Describe ``gemm_nt(a, b, out_dtype)`` as one native call (:class:`ScaledMmCall`); runs on any device.

    ``a`` is ``[..., K]`` (leading dimensions fold into M), ``b`` is ``[N, K]``; both quantized along K
    with the same recipe, as QuantizedTensors or already in the hardware's form (:class:`Fp4Operand`).
    ``api`` forces an entry point (default: :func:`default_api`).
    """
    for op in (a, b):  # the recipe and group checks first: they name what is wrong with a QuantizedTensor
        if isinstance(op, QuantizedTensor):
            fp4_recipe(op)
    if isinstance(b, QuantizedTensor) and b.codes.dim() != 2:
        raise ValueError(f"operand b must be 2-D [N, K], got shape {tuple(b.shape)}")
    op_a, lead = _operand(a, "a")
    op_b, _ = _operand(b, "b")
    recipe = op_a.recipe
    if op_b.recipe is not recipe:
        raise ValueError(f"the native FP4 GEMM needs one recipe for both operands; a is {recipe.value}, b is {op_b.recipe.value}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {[str(d) for d in OUT_DTYPES]}, got {out_dtype}")
    if op_a.shape[1] != op_b.shape[1]:
        raise ValueError(f"gemm_nt: inner dimensions differ: {(*lead, op_a.shape[1])} @ {tuple(op_b.shape)}^T")
    k, n = op_a.shape[1], op_b.shape[0]
    if k % K_MULTIPLE or n % N_MULTIPLE:
        raise ValueError(
            f"the native FP4 GEMM needs K % {K_MULTIPLE} == 0 and N % {N_MULTIPLE} == 0 (torch._scaled_mm on packed "
            f"float4: K/2 bytes and N multiples of 16); got K = {k}, N = {n}; pad K or keep this layer in high precision"
        )
    # a 0-dim CPU alpha (MXFP4's factor, kept on the host by the quantize kernels) is a scalar on any device
    devices = {t.device for t in (*op_a, *op_b) if not (t.dim() == 0 and t.device.type == "cpu")}
    if len(devices) != 1:
        raise ValueError(f"operands must be on one device, got {sorted(map(str, devices))}")
    api = ScaledMmApi(api) if api is not None else default_api(recipe)
    enums = _functional_enums()
    if api is ScaledMmApi.FUNCTIONAL and enums is None:
        raise RuntimeError(
            f"torch {torch.__version__} has no torch.nn.functional.scaled_mm with ScalingType/SwizzleType; use api='torch._scaled_mm'"
        )

    mat_b = op_b.data.t()  # [K/2, N] column-major: .t() swaps bytes, each byte keeps its two K elements
    out_shape = (*lead, n)
    two_level = api is ScaledMmApi.FUNCTIONAL and recipe is Fp4Recipe.NVFP4
    if two_level:
        scaling, swizzle = enums
        rec = (scaling.BlockWise1x16, scaling.TensorWise)
        swz = (swizzle.SWIZZLE_32_4_4, swizzle.NO_SWIZZLE)
        return ScaledMmCall(
            api,
            recipe,
            op_a.data,
            mat_b,
            (op_a.scales_blocked, op_a.alpha),
            (op_b.scales_blocked, op_b.alpha),
            rec,
            rec,
            swz,
            swz,
            gemm_dtype=out_dtype,
            out_dtype=out_dtype,
            alpha=None,
            out_shape=out_shape,
        )
    if api is ScaledMmApi.FUNCTIONAL:  # MXFP4: FBGEMM GenAI / MSLK f4f4bf16 writes BF16 only
        scaling, swizzle = enums
        rec, swz, gemm_dtype = (scaling.BlockWise1x32,), (swizzle.SWIZZLE_32_4_4,), torch.bfloat16
    else:  # cuBLASLt: FP32 output, so that alpha is applied before the only rounding
        rec = swz = ()
        gemm_dtype = torch.float32
    return ScaledMmCall(
        api,
        recipe,
        op_a.data,
        mat_b,
        (op_a.scales_blocked,),
        (op_b.scales_blocked,),
        rec,
        rec,
        swz,
        swz,
        gemm_dtype=gemm_dtype,
        out_dtype=out_dtype,
        alpha=op_a.alpha * op_b.alpha,
        out_shape=out_shape,
    )


def gemm_nt(a: QuantizedTensor, b: QuantizedTensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``a @ b^T`` on the Blackwell tensor cores; same contract as :func:`fp4compile.reference.gemm.gemm_nt`.

    Raises :class:`BlackwellUnavailableError` on anything but a compute capability 10.x GPU.
    """
    device = a.codes.device if isinstance(a, QuantizedTensor) else getattr(a, "device", None)
    check_blackwell(device)
    return scaled_mm_args(a, b, out_dtype).execute()


def gemm_operands(a: Fp4Operand, b: Fp4Operand, out_dtype: torch.dtype) -> torch.Tensor:
    """``a [M, K] @ b [N, K]^T * alpha_a * alpha_b`` -> ``out_dtype [M, N]`` from operands in the hardware's form
    (what the ``blackwell`` lowering multiplies). N that is not a multiple of 16 (the GEMM's limit) gets zero
    rows appended to b's data (their blocked scales exist already: the layout pads rows to 128) and the
    output is cut back. Raises :class:`BlackwellUnavailableError` off compute capability 10.x.
    """
    check_blackwell(a.data.device)
    n = b.data.shape[0]
    pad = (-n) % N_MULTIPLE
    if pad:
        data = torch.nn.functional.pad(b.data.view(torch.uint8), (0, 0, 0, pad)).view(torch.float4_e2m1fn_x2)
        b = b._replace(data=data)
    out = scaled_mm_args(a, b, out_dtype).execute()
    return out[:, :n].contiguous() if pad else out


# ----------------------------------------------------------------------------------------------
# The probe: does this GPU's native FP4 GEMM compute what the reference does?
# ----------------------------------------------------------------------------------------------

_PROBES: dict[torch.device, str | None] = {}


def _probe_operand(rows: int, k: int, recipe: Fp4Recipe, device: torch.device, gen: torch.Generator) -> QuantizedTensor:
    """Random codes and scale bytes of moderate range (every E2M1 code, signs included)."""
    group = MXFP4_GROUP if recipe is Fp4Recipe.MXFP4 else NVFP4_GROUP
    codes = torch.randint(0, 256, (rows, k // 2), generator=gen, dtype=torch.uint8)
    if recipe is Fp4Recipe.MXFP4:
        scales = torch.randint(120, 134, (rows, k // group), generator=gen, dtype=torch.uint8)  # 2^-7 .. 2^6
        fmt, tscale = ScaleFormat.E8M0, torch.ones(())
    else:
        scales = torch.randint(0x20, 0x60, (rows, k // group), generator=gen, dtype=torch.uint8)  # E4M3 2^-3 .. 2^4.9
        fmt, tscale = ScaleFormat.E4M3, torch.tensor(0.375)
    return QuantizedTensor(codes.to(device), scales.to(device), fmt, group, tscale.to(device))


def native_gemm_problem(device: torch.device | str | None = None) -> str | None:
    """Why this device cannot take the ``blackwell`` lowering, or None when it can: the capability and the torch
    API are checked, then one small MXFP4 and one NVFP4 GEMM of random operands (M = 200, N = 144, K = 256) run
    and are compared with :func:`fp4compile.reference.gemm.gemm_nt` (FP32 output; MXFP4's GEMM writes BF16, so
    within 2^-7 of the largest output, NVFP4's within 1e-4). Cached per device: one probe per process.
    """
    from fp4compile.reference.gemm import gemm_nt as reference_gemm_nt

    try:
        check_blackwell(device)
        _require_dtypes()
    except (BlackwellUnavailableError, RuntimeError) as err:
        return str(err)
    cuda = _cuda_device(device)
    if cuda not in _PROBES:
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # kernel selection runs inside the compiler's fake mode: the probe needs real tensors
            _PROBES[cuda] = _probe(cuda, reference_gemm_nt)
    return _PROBES[cuda]


def _probe(cuda: torch.device, reference_gemm_nt) -> str | None:
    gen = torch.Generator().manual_seed(2026)
    for recipe, tol in ((Fp4Recipe.MXFP4, 2**-7), (Fp4Recipe.NVFP4, 1e-4)):
        a, b = _probe_operand(200, 256, recipe, cuda, gen), _probe_operand(144, 256, recipe, cuda, gen)
        try:
            got = gemm_nt(a, b, torch.float32)
        except Exception as err:  # noqa: BLE001 (any failure of the native call is the answer: not usable here)
            return f"the native {recipe.value} GEMM failed: {type(err).__name__}: {err}"
        want = reference_gemm_nt(a, b, torch.float32)
        err_max = float((got - want).abs().max()) / max(float(want.abs().max()), 1e-30)
        if not err_max <= tol:
            return f"the native {recipe.value} GEMM differs from the reference by {err_max:.2e} of its largest output (allowed {tol:.0e})"
    return None
