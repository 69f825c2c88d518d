"""Claims about the Blackwell lowering (lowering/blackwell.py), proved on the CPU; the GEMM itself is not
run anywhere here (no Blackwell GPU): the one test that runs it skips without compute capability 10.x.

* Scales: ``as_fp4_operand`` lays the group scales out exactly as ``formats.to_blocked`` (bytes equal,
  atol=0), with the dtype the hardware reads (float8_e8m0fnu for MXFP4, float8_e4m3fn for NVFP4), 1-D,
  contiguous, of the size torch's ``_scaled_mm`` demands (round_up(M,128) * round_up(K/g,4), torch's
  formula written out here, not formats.blocked_shape); ``from_blocked`` gives the scales back. Shapes:
  M = 300, K = 96 (3 or 6 scale columns: padded) and M = 133, K = 512, plus a 3-D operand.
* Data: the float4_e2m1fn_x2 tensor ``[M, K/2]`` is a view of the codes (same storage, same bytes as
  ``formats.pack_e2m1``): element 2i in the low nibble (0.5, 6.0 -> byte 0x71, the convention of torch's
  own FP4 tests and of cuBLASLt's CUDA_R_4F_E2M1) and round-trips through ``unpack_e2m1``. The second
  operand's ``.t()`` swaps bytes, not elements: it is the column-major ``[K/2, N]`` view of b's codes.
* Alpha: the operand's alpha equals ``QuantizedTensor.alpha`` bit for bit (MXFP4 Tseng 4/3, NVFP4 tensor
  scale); the call applies alpha_a * alpha_b once: as TensorWise scales in the epilogue (NVFP4, two-level
  F.scaled_mm) or after the GEMM (MXFP4, whose F.scaled_mm kernel writes BF16; the legacy entry point,
  which writes FP32).
* The call: ``scaled_mm_args`` picks torch.nn.functional.scaled_mm for both recipes (torch 2.11's
  torch._scaled_mm refuses MXFP4 on CUDA); the legacy entry point can be forced. Shapes, dtypes, strides,
  recipes and swizzles are as documented; torch's own meta kernels accept the call (the size, dtype and
  swizzle checks) and give the output shape and dtype, and refuse a scale one byte short; interpreting
  the call's arguments the way the GEMM does (unblock the scales, low nibble first, TensorWise scales
  multiply, round to the GEMM's output dtype, then alpha) reproduces ``reference.gemm.gemm_nt`` (1e-5,
  or BF16's 2**-8 where the GEMM writes BF16).
* Errors: mixed recipes, a plain tensor operand, other group sizes, K % 32 or N % 16, bad out_dtype;
  ``gemm_nt`` off Blackwell raises BlackwellUnavailableError naming the reason (no GPU, or the GPU's
  capability) and never falls back.
* Triton for sm_100 without a GPU: a representative FP4 packing kernel (E2M1 round-to-nearest-even +
  two nibbles per byte) is bit-exact with formats.e2m1_encode_rtn + pack_e2m1 under Triton's CPU
  interpreter, and compiles to sm_100a PTX and a cubin; its hardware variant (``cvt.rn.satfinite.e2m1x2.f32``)
  assembles for sm_100a and is refused for sm_90a. Skipped, with the reason, if the toolchain cannot
  compile for sm_100 here. The nibble order of that hardware instruction is not checked (needs the GPU).

Coverage: MXFP4 x MXFP4 and NVFP4 x NVFP4, each on both entry points where torch has them; CPU and meta.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from fp4compile import formats
from fp4compile.lowering import blackwell as bw
from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.reference import mxfp4, nvfp4
from fp4compile.reference.gemm import gemm_nt as reference_gemm_nt
from tests.conftest import sqnr_db

RECIPES = {
    "mxfp4": (ScaleFormat.E8M0, 32, torch.float8_e8m0fnu),
    "nvfp4": (ScaleFormat.E4M3, 16, torch.float8_e4m3fn),
}
SHAPES = [(300, 96), (133, 512)]  # (M, K): odd M, K/g not a multiple of 4 for K = 96


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _random_q(shape: tuple[int, ...], recipe: str, seed: int = 0, factor: float = 1.0) -> QuantizedTensor:
    """A QuantizedTensor with random codes and scale bytes (every byte value distinct enough to catch a layout bug)."""
    fmt, group, _ = RECIPES[recipe]
    g = torch.Generator().manual_seed(seed)
    *lead, k = shape
    codes = torch.randint(0, 16, (*lead, k), dtype=torch.uint8, generator=g)
    scales = torch.randint(0, 0xFF if fmt is ScaleFormat.E8M0 else 0x7F, (*lead, k // group), dtype=torch.uint8, generator=g)
    ts = torch.rand((), generator=g) + 0.5 if fmt is ScaleFormat.E4M3 else torch.ones(())
    return QuantizedTensor(formats.pack_e2m1(codes), scales, fmt, group, ts.float(), factor)


def _quantized(x: torch.Tensor, recipe: str) -> QuantizedTensor:
    """Real quantizers: MXFP4 with the Tseng 3/4 rule (alpha 4/3), NVFP4 RTN (alpha = its tensor scale)."""
    return mxfp4.quantize_tseng(x) if recipe == "mxfp4" else nvfp4.quantize_rtn(x)


# ----------------------------------------------------------------------------------------------
# Operand layout
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("m,k", SHAPES)
def test_scales_are_formats_to_blocked(recipe, m, k):
    q = _random_q((m, k), recipe)
    _, group, scale_dtype = RECIPES[recipe]
    op = bw.as_fp4_operand(q)
    s = op.scales_blocked
    assert s.dtype == scale_dtype and s.dim() == 1 and s.is_contiguous()
    assert s.numel() == _round_up(m, 128) * _round_up(k // group, 4)  # torch's _scaled_mm size check
    assert torch.equal(s.view(torch.uint8), formats.to_blocked(q.scales))
    assert torch.equal(formats.from_blocked(s.view(torch.uint8), m, k // group), q.scales)
    rows_p, cols_p = formats.blocked_shape(m, k // group)
    assert torch.equal(formats.from_blocked(s.view(torch.uint8), rows_p, cols_p)[m:], torch.zeros(rows_p - m, cols_p, dtype=torch.uint8))


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("m,k", SHAPES)
def test_float4_data_views_packed_codes(recipe, m, k):
    q = _random_q((m, k), recipe, seed=1)
    data = bw.as_fp4_operand(q).data
    assert data.dtype == torch.float4_e2m1fn_x2 and data.shape == (m, k // 2)
    assert data.data_ptr() == q.codes.data_ptr()  # a view, no copy
    codes = formats.unpack_e2m1(q.codes)
    assert torch.equal(data.view(torch.uint8), formats.pack_e2m1(codes))
    assert torch.equal(formats.unpack_e2m1(data.view(torch.uint8)), codes)


def test_float4_nibble_order_is_element_2i_low():
    x = torch.tensor([[0.5, 6.0] * 16])  # one MXFP4 group: codes 1 and 7
    q = mxfp4.quantize_rtn(x * 4)  # amax 24 -> scale 2**(4-2) = 4, x*4/4 = x
    assert torch.equal(formats.e8m0_decode(q.scales), torch.tensor([[4.0]]))
    data = bw.as_fp4_operand(q).data
    assert data.view(torch.uint8)[0, 0].item() == 0x71  # 0.5 (code 1) low nibble, 6.0 (code 7) high


def test_leading_dims_fold_into_m():
    q = _random_q((2, 150, 64), "nvfp4", seed=2)
    op = bw.as_fp4_operand(q)
    assert op.data.shape == (300, 32)
    assert torch.equal(op.scales_blocked.view(torch.uint8), formats.to_blocked(q.scales.reshape(300, 4)))


def test_non_contiguous_codes_are_copied_not_misread():
    q = _random_q((64, 128), "mxfp4", seed=3)
    q2 = QuantizedTensor(q.codes.t().contiguous().t(), q.scales, q.scale_format, q.group_size, q.tensor_scale)
    assert not q2.codes.is_contiguous()
    data = bw.as_fp4_operand(q2).data
    assert data.is_contiguous() and torch.equal(data.view(torch.uint8), q.codes)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_alpha_matches_quantized_tensor(recipe):
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(4)) * 3
    q = _quantized(x, recipe)
    alpha = bw.as_fp4_operand(q).alpha
    assert alpha.dtype == torch.float32 and alpha.dim() == 0
    assert torch.equal(alpha, q.alpha.reshape(()))
    if recipe == "mxfp4":
        assert alpha.item() == pytest.approx(4 / 3, rel=1e-7)  # Tseng's 3/4 rule decodes with 4/3
    else:
        assert alpha.item() == q.tensor_scale.item() != 1.0


# ----------------------------------------------------------------------------------------------
# The call
# ----------------------------------------------------------------------------------------------


def _apis(recipe: str) -> list[bw.ScaledMmApi]:
    return [bw.ScaledMmApi.LEGACY] + ([bw.ScaledMmApi.FUNCTIONAL] if bw.has_functional_scaled_mm() else [])


def test_default_api_per_recipe():
    """F.scaled_mm wherever torch has it (torch 2.11's torch._scaled_mm refuses MXFP4 on CUDA)."""
    expected = bw.ScaledMmApi.FUNCTIONAL if bw.has_functional_scaled_mm() else bw.ScaledMmApi.LEGACY
    assert bw.default_api(bw.Fp4Recipe.MXFP4) is bw.default_api(bw.Fp4Recipe.NVFP4) is expected
    assert bw.has_functional_scaled_mm(), f"torch >= 2.11 (pyproject) has F.scaled_mm; torch {torch.__version__} lacks it"


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("m,k", SHAPES)
def test_scaled_mm_args_shapes_and_dtypes(recipe, m, k):
    n = 256
    _, group, scale_dtype = RECIPES[recipe]
    a, b = _random_q((m, k), recipe, 5), _random_q((n, k), recipe, 6)
    for api in _apis(recipe):
        call = bw.scaled_mm_args(a, b, torch.bfloat16, api=api)
        assert call.api is api and call.recipe.value == recipe and call.mnk == (m, n, k)
        assert call.mat_a.dtype == call.mat_b.dtype == torch.float4_e2m1fn_x2
        assert call.mat_a.shape == (m, k // 2) and call.mat_a.stride() == (k // 2, 1)  # row-major
        assert call.mat_b.shape == (k // 2, n) and call.mat_b.stride() == (1, k // 2)  # column-major
        assert torch.equal(call.mat_b.view(torch.uint8).t(), b.codes)  # .t() swapped bytes, not nibbles
        assert call.scale_a[0].dtype == call.scale_b[0].dtype == scale_dtype
        assert call.scale_a[0].numel() == _round_up(m, 128) * _round_up(k // group, 4)
        assert call.scale_b[0].numel() == _round_up(n, 128) * _round_up(k // group, 4)
        assert call.out_shape == (m, n) and call.out_dtype == torch.bfloat16
        two_level = api is bw.ScaledMmApi.FUNCTIONAL and recipe == "nvfp4"
        if two_level:
            F = torch.nn.functional
            assert call.scale_recipe_a == call.scale_recipe_b == (F.ScalingType.BlockWise1x16, F.ScalingType.TensorWise)
            assert call.swizzle_a == call.swizzle_b == (F.SwizzleType.SWIZZLE_32_4_4, F.SwizzleType.NO_SWIZZLE)
            assert torch.equal(call.scale_a[1], a.alpha.reshape(())) and torch.equal(call.scale_b[1], b.alpha.reshape(()))
            assert call.alpha is None and call.gemm_dtype == torch.bfloat16
        else:
            assert len(call.scale_a) == len(call.scale_b) == 1 and torch.equal(call.alpha, a.alpha * b.alpha)
            if api is bw.ScaledMmApi.FUNCTIONAL:  # MXFP4 on FBGEMM GenAI's f4f4bf16: BF16 output only
                F = torch.nn.functional
                assert call.scale_recipe_a == call.scale_recipe_b == (F.ScalingType.BlockWise1x32,)
                assert call.swizzle_a == call.swizzle_b == (F.SwizzleType.SWIZZLE_32_4_4,)
                assert call.gemm_dtype == torch.bfloat16
            else:  # cuBLASLt: FP32 output, alpha, one rounding
                assert call.scale_recipe_a == call.swizzle_a == () and call.gemm_dtype == torch.float32
        assert recipe in call.describe() and api.value in call.describe()


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_torch_meta_kernels_accept_the_call(recipe, out_dtype):
    a, b = _random_q((2, 150, 96), recipe, 7), _random_q((272, 96), recipe, 8)
    for api in _apis(recipe):
        out = bw.scaled_mm_args(a, b, out_dtype, api=api).to("meta").execute()
        assert out.device.type == "meta" and out.shape == (2, 150, 272) and out.dtype == out_dtype


def test_torch_meta_kernel_rejects_a_wrong_scale_size():
    """The meta check is real: one scale byte short is refused (so the test above proves something)."""
    a, b = _random_q((300, 96), "mxfp4", 9), _random_q((256, 96), "mxfp4", 10)
    call = bw.scaled_mm_args(a, b, torch.bfloat16, api=bw.ScaledMmApi.LEGACY).to("meta")
    short = dataclasses.replace(call, scale_a=(call.scale_a[0][:-1],))
    with pytest.raises(RuntimeError, match="should have 1536 elements"):
        short.execute()


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("m,k", SHAPES)
def test_call_semantics_reproduce_the_reference(recipe, m, k):
    g = torch.Generator().manual_seed(11)
    a, b = _quantized(torch.randn(m, k, generator=g), recipe), _quantized(torch.randn(208, k, generator=g) * 5, recipe)
    ref = reference_gemm_nt(a, b, torch.float32)
    for api in _apis(recipe):
        call = bw.scaled_mm_args(a, b, torch.float32, api=api)
        tol = 1e-5 if call.gemm_dtype == torch.float32 else 2**-8  # MXFP4 via F.scaled_mm: BF16 accumulator output
        torch.testing.assert_close(call.emulate(), ref, rtol=tol, atol=tol * ref.abs().max().item())


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_rejects_what_the_native_gemm_cannot_take():
    mx, nv = _random_q((128, 64), "mxfp4"), _random_q((128, 64), "nvfp4")
    with pytest.raises(ValueError, match="one recipe for both operands; a is mxfp4, b is nvfp4"):
        bw.scaled_mm_args(mx, nv, torch.bfloat16)
    with pytest.raises(TypeError, match="operand b is a plain Tensor"):
        bw.scaled_mm_args(mx, torch.randn(128, 64), torch.bfloat16)
    e8m0_16 = QuantizedTensor(mx.codes, torch.zeros(128, 4, dtype=torch.uint8), ScaleFormat.E8M0, 16, torch.ones(()))
    with pytest.raises(ValueError, match="E8M0 scales, groups of 32"):
        bw.as_fp4_operand(e8m0_16)
    with pytest.raises(ValueError, match="K % 32 == 0 and N % 16 == 0.*K = 48"):
        bw.scaled_mm_args(_random_q((128, 48), "nvfp4"), _random_q((128, 48), "nvfp4"), torch.bfloat16)
    with pytest.raises(ValueError, match="N = 120"):
        bw.scaled_mm_args(nv, _random_q((120, 64), "nvfp4"), torch.bfloat16)
    with pytest.raises(ValueError, match="out_dtype"):
        bw.scaled_mm_args(nv, nv, torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        bw.scaled_mm_args(nv, _random_q((128, 96), "nvfp4"), torch.bfloat16)
    bad_scales = QuantizedTensor(nv.codes, nv.scales[:, :2], ScaleFormat.E4M3, 16, torch.ones(()))
    with pytest.raises(ValueError, match="need scales of shape"):
        bw.as_fp4_operand(bad_scales)


@pytest.mark.skipif(bw.is_blackwell(), reason="this machine is a Blackwell GPU: the error path does not apply")
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_gemm_nt_off_blackwell_raises_clearly(recipe):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = _random_q((128, 64), recipe), _random_q((128, 64), recipe)
    if device == "cuda":
        a = QuantizedTensor(a.codes.cuda(), a.scales.cuda(), a.scale_format, a.group_size, a.tensor_scale.cuda())
    assert not bw.is_blackwell(device)
    with pytest.raises(bw.BlackwellUnavailableError, match=r"compute capability 10\.x") as info:
        bw.gemm_nt(a, b, torch.bfloat16)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        assert f"compute capability {major}.{minor}" in str(info.value)
    else:
        assert "no CUDA GPU" in str(info.value)
    assert "never falls back" in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not bw.is_blackwell(), reason="needs a GPU of compute capability 10.x (B200/GB200/B300)")
@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_gemm_nt_on_blackwell_matches_reference(recipe, out_dtype):
    g = torch.Generator().manual_seed(12)
    x, w = torch.randn(300, 512, generator=g), torch.randn(256, 512, generator=g)
    a, b = _quantized(x.cuda(), recipe), _quantized(w.cuda(), recipe)
    got = bw.gemm_nt(a, b, out_dtype)
    ref = reference_gemm_nt(a, b, out_dtype)
    assert got.dtype == out_dtype and got.shape == ref.shape
    # FP4 x FP4 products and FP32 accumulation are exact up to summation order, so the error is the output
    # rounding: ~54 dB for one BF16 rounding (bf16 output, or MXFP4's BF16-only GEMM output), far more for FP32.
    exact_fp32 = out_dtype == torch.float32 and recipe == "nvfp4"
    assert sqnr_db(got.float(), ref.float()) > (100 if exact_fp32 else 45)


# ----------------------------------------------------------------------------------------------
# Triton for sm_100 without a GPU
# ----------------------------------------------------------------------------------------------

HAS_TRITON = importlib.util.find_spec("triton") is not None
SIGNATURE = {"x_ptr": "*fp32", "out_ptr": "*u8", "n_bytes": "i32", "BLOCK": "constexpr"}

if HAS_TRITON:
    import triton
    import triton.language as tl

    # Plain functions, wrapped below: with TRITON_INTERPRET=1 (set by conftest without a GPU) triton.jit would
    # give interpreter objects that cannot be compiled; JITFunction / InterpretedFunction are taken explicitly.
    def _pack_e2m1_rtn(x_ptr, out_ptr, n_bytes, BLOCK: tl.constexpr):
        """x fp32 [2 * n_bytes] -> bytes [n_bytes]: E2M1 RTN-even codes (saturating at 6, NaN -> +6),
        element 2i in the low nibble. The code is the number of grid midpoints below |x|, ties to even."""
        pid = tl.program_id(0)
        offs = pid * 2 * BLOCK + tl.arange(0, 2 * BLOCK)
        v = tl.load(x_ptr + offs, mask=offs < 2 * n_bytes, other=0.0)
        a = tl.where(v != v, 6.0, tl.abs(v))
        code = (
            (a > 0.25).to(tl.uint8) + (a >= 0.75).to(tl.uint8) + (a > 1.25).to(tl.uint8) + (a >= 1.75).to(tl.uint8)
            + (a > 2.5).to(tl.uint8) + (a >= 3.5).to(tl.uint8) + (a > 5.0).to(tl.uint8)
        )  # fmt: skip
        negative = ((v.to(tl.uint32, bitcast=True) >> 31) != 0) & (v == v)
        code = code | (negative.to(tl.uint8) << 3)
        lo, hi = tl.split(tl.reshape(code, (BLOCK, 2)))
        ob = pid * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + ob, lo | (hi << 4), mask=ob < n_bytes)

    def _pack_e2m1_cvt(x_ptr, out_ptr, n_bytes, BLOCK: tl.constexpr):
        """The same with Blackwell's conversion instruction: cvt.rn.satfinite.e2m1x2.f32 d, hi, lo puts its
        first source in the high nibble (PTX ISA), so element 2i+1 goes first."""
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < n_bytes
        lo = tl.load(x_ptr + 2 * offs, mask=m, other=0.0)
        hi = tl.load(x_ptr + 2 * offs + 1, mask=m, other=0.0)
        byte = tl.inline_asm_elementwise(
            "{ .reg .b8 t; cvt.rn.satfinite.e2m1x2.f32 t, $2, $1; cvt.u32.u8 $0, t; }",
            "=r,r,r",
            [lo, hi],
            dtype=tl.uint32,
            is_pure=True,
            pack=1,
        )
        tl.store(out_ptr + offs, byte.to(tl.uint8), mask=m)


def _compile(fn, capability: int):
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    src = triton.compiler.ASTSource(fn=JITFunction(fn), signature=SIGNATURE, constexprs={"BLOCK": 128})
    return triton.compile(src, target=GPUTarget("cuda", capability, 32))


@pytest.fixture(scope="module")
def sm100_toolchain():
    if not HAS_TRITON:
        pytest.skip("triton is not installed")

    def trivial(x_ptr, out_ptr, n_bytes, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, tl.load(x_ptr + offs).to(tl.uint8), mask=offs < n_bytes)

    try:
        _compile(trivial, 100)
    except Exception as e:  # any failure of the toolchain itself means: cannot test here
        pytest.skip(f"Triton {triton.__version__} cannot compile for sm_100 on this machine: {type(e).__name__}: {str(e)[:300]}")


@pytest.mark.interpreter
@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_packing_kernel_is_bit_exact_under_the_interpreter():
    from triton.runtime.interpreter import InterpretedFunction

    x = torch.randn(1002, generator=torch.Generator().manual_seed(13)) * 3
    special = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.0, float("nan"), float("inf"), -7.0, -0.25, -float("nan"), 6.0001]
    x[: len(special)] = torch.tensor(special)
    out = torch.empty(501, dtype=torch.uint8)
    InterpretedFunction(_pack_e2m1_rtn)[(4,)](x, out, 501, BLOCK=128)
    assert torch.equal(out, formats.pack_e2m1(formats.e2m1_encode_rtn(x)))


def test_packing_kernel_compiles_for_sm100(sm100_toolchain):
    k = _compile(_pack_e2m1_rtn, 100)
    assert ".target sm_100a" in k.asm["ptx"]
    assert isinstance(k.asm["cubin"], bytes) and k.asm["cubin"][:4] == b"\x7fELF" and len(k.asm["cubin"]) > 1000


def test_hardware_e2m1_conversion_assembles_for_sm100_only(sm100_toolchain):
    k = _compile(_pack_e2m1_cvt, 100)
    assert "cvt.rn.satfinite.e2m1x2.f32" in k.asm["ptx"] and k.asm["cubin"][:4] == b"\x7fELF"
    with pytest.raises(Exception, match="e2m1x2"):  # ptxas: "Feature 'cvt.e2m1x2.f32' not supported on .target 'sm_90a'"
        _compile(_pack_e2m1_cvt, 90)
