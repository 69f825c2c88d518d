"""Claims about the Hopper GEMM lowering (lowering/hopper_gemm.py) against the reference:

* ``_pow2`` builds every float32 power of two 2^-149 .. 2^127 exactly (subnormals included).
* ``fold_mxfp4_fp8`` is exact bit for bit: ``a8.float() * row_scale`` equals ``QuantizedTensor.block_values()``
  for the outputs of the reference MXFP4 quantizers on random data (rows spread over many binades), on
  crafted rows (the 14-binade boundary, zero-code groups with large scales, all-zero rows, byte 0,
  byte 254 overflowing to inf, NaN scale bytes) and on uniformly random codes and scale bytes. Groups
  with a nonzero code more than 14 binades below their row's largest group are counted exactly (also
  in fold_stats()) and, there, ``a8`` is the E4M3 round-to-nearest-even of ``block_value / row_scale``.
  A NaN scale makes its group NaN (row_scale stays finite).
* ``nvfp4_to_bf16`` equals ``e2m1 * s8`` (the block values, tensor scale not applied) bit for bit for
  nvfp4_rtn, nvfp4_4over6 and nvfp4_ms_eden outputs, NaN groups included.
* ``gemm_nt`` on the CPU: the exact path (NVFP4, mixed formats, bf16 and float32 operands, 3-D inputs)
  agrees with the reference gemm to 1e-6 of max|ref| (same float32 accumulation; on the CPU in fact
  bit for bit) plus, for bf16 output, half a bf16 ulp (2^-8) compared with the float32 reference. torch 2.13's CPU ``_scaled_mm`` supports row-wise FP8
  scaling, so the MXFP4 path (``_scaled_mm`` called with ``use_fast_accum=False``) is tested on the CPU
  too: within 1e-3 relative (max abs error / max |ref|; plus 2^-8 for bf16 output), with the 16/9 alpha, N not a multiple of 16,
  NaN rows propagating, and fold_stats() counting every folded group.
* GPU (skipped without CUDA): at 4096x4096x4096 on Gaussian random data the MXFP4 FP8 path is within
  2e-4 of the reference (measured 0 on an H100: the exact partial sums fit the FP8 accumulator), and
  within 1e-3 when the groups' magnitudes spread over 2^-6..2^6 (measured up to 4.4e-4; fast
  accumulation would give 2e-3..6e-3); the NVFP4 BF16 path (bf16 output) is within 1e-2; folding on CUDA equals folding on the
  CPU bit for bit; the CUDA edge cases (padding, NaN rows, 3-D inputs) match the reference. The measured
  errors are printed (pytest -s).
"""

from __future__ import annotations

import pytest
import torch

import fp4compile as f4
from fp4compile import formats
from fp4compile.lowering import hopper_gemm as hg
from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.reference.gemm import gemm_nt as ref_gemm_nt
from tests.conftest import requires_cuda

MX = ["mxfp4_quest", "mxfp4_tseng_rtn", "mxfp4_rtn", "mxfp4_tseng_sr"]
NV = ["nvfp4_rtn", "nvfp4_4over6", "nvfp4_ms_eden"]


@pytest.fixture(autouse=True)
def _fresh_stats():
    hg.reset_fold_stats()
    yield
    hg.reset_fold_stats()


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def assert_bits_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Same NaN positions and, elsewhere, the same float32 bits (so -0 != +0)."""
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan), "NaN positions differ"
    a_bits = torch.where(nan, 0, actual.view(torch.int32))
    e_bits = torch.where(nan, 0, expected.view(torch.int32))
    diff = (a_bits != e_bits).nonzero()
    assert diff.numel() == 0, f"{diff.shape[0]} values differ, first at {diff[0].tolist()}: {actual[tuple(diff[0])]} vs {expected[tuple(diff[0])]}"


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| over finite reference values."""
    out, ref = out.double(), ref.double()
    finite = torch.isfinite(ref)
    return float((out - ref)[finite].abs().max() / ref[finite].abs().max())


def output_rounding(dtype: torch.dtype) -> float:
    """Half an ulp of the output dtype, relative: what rounding a float32 result to it adds at most."""
    return 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps / 2


def oracle_unfoldable(codes: torch.Tensor, scales: torch.Tensor, group: int = 32) -> tuple[int, torch.Tensor]:
    """Independent loop count of the groups below the 14-binade window, and their mask [M, G].

    The row's top exponent comes from groups with a nonzero code and a scale byte other than 0 (2^-127) and
    0xFF (NaN); a row without one has row scale 1 (top = 6 + 127). Every group with a nonzero code is checked.
    """
    q = formats.unpack_e2m1(codes).unflatten(-1, (-1, group))
    below = torch.zeros(scales.shape, dtype=torch.bool)
    for r in range(scales.shape[0]):
        nonzero = [g for g in range(scales.shape[1]) if scales[r, g] != 0xFF and bool(((q[r, g] & 7) != 0).any())]
        live = [g for g in nonzero if scales[r, g] != 0]
        top = max(int(scales[r, g]) for g in live) if live else 6 + 127
        for g in nonzero:
            below[r, g] = int(scales[r, g]) < top - 14
    return int(below.sum()), below


def check_fold(codes: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fold and check every claim of fold_mxfp4_fp8 against the reference block values."""
    qt = QuantizedTensor(codes, scales, ScaleFormat.E8M0, 32, torch.ones(()))
    ref = qt.block_values()  # [M, K] f32, exact
    a8, row_scale, n = hg.fold_mxfp4_fp8(codes, scales)
    assert a8.dtype == torch.float8_e4m3fn and a8.shape == ref.shape
    assert row_scale.dtype == torch.float32 and row_scale.shape == (ref.shape[0], 1)
    assert torch.isfinite(row_scale).all()
    count, below = oracle_unfoldable(codes, scales)
    assert n == count
    exact = ~below.repeat_interleave(32, dim=-1)  # [M, K]
    got = a8.float() * row_scale
    assert_bits_equal(torch.where(exact, got, 0.0), torch.where(exact, ref, 0.0))
    # Everywhere (finite), a8 is the E4M3 rounding of the value in row-scale units.
    finite = torch.isfinite(ref)
    rounded = torch.where(finite, ref / row_scale, 0.0).to(torch.float8_e4m3fn).float()
    assert_bits_equal(torch.where(finite, a8.float(), 0.0), rounded)
    return a8, row_scale, n


def crafted(exps: list[list[int | None]], codes_of: list[list[int]] | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of groups with given exponents (None = NaN scale); random nonzero codes unless given per group."""
    g = torch.Generator().manual_seed(seed)
    m, n_groups = len(exps), len(exps[0])
    codes = torch.randint(1, 16, (m, n_groups, 32), generator=g, dtype=torch.uint8)
    codes[codes == 8] = 9  # no -0: every group of random codes holds a nonzero value
    if codes_of is not None:
        for r, row in enumerate(codes_of):
            for j, c in enumerate(row):
                if c >= 0:
                    codes[r, j] = c
    scales = torch.tensor([[0xFF if e is None else e + 127 for e in row] for row in exps], dtype=torch.uint8)
    return formats.pack_e2m1(codes.flatten(-2)), scales


# ----------------------------------------------------------------------------------------------
# folding (CPU)
# ----------------------------------------------------------------------------------------------


def test_pow2_exact():
    e = torch.arange(-149, 128)
    expected = torch.tensor([2.0**i for i in range(-149, 128)], dtype=torch.float32)
    assert_bits_equal(hg._pow2(e), expected)


@pytest.mark.parametrize("name", MX)
def test_fold_exact_on_reference_quantizers(name):
    # Rows at magnitudes from 1e-12 to 1e12, groups within a row spread by up to 2^+-5.
    x = torch.randn(96, 512) * torch.exp(torch.randn(96, 1) * 9) * torch.exp2(torch.randint(-5, 6, (96, 16, 1)).float()).repeat_interleave(32, 1).squeeze(-1)
    q = f4.get_quantizer(name).quantize(x, seed=5)
    _, _, n = check_fold(q.codes, q.scales)
    assert n == 0


@pytest.mark.parametrize("name", ["mxfp4_quest", "mxfp4_tseng_rtn"])
def test_fold_counts_spread_groups_of_reference_quantizers(name):
    x = torch.randn(40, 256)
    x[:, 32:64] *= 2.0**-20  # one group per row ~20 binades below the rest: rounded, counted
    x[:8, 64:96] *= 2.0**-13  # within the window: exact
    q = f4.get_quantizer(name).quantize(x, seed=5)
    _, _, n = check_fold(q.codes, q.scales)
    assert n == 40
    assert hg.fold_stats() == {"groups": 40 * 8, "unfoldable_groups": 40}


def test_fold_crafted_rows():
    exps = [
        [3, -11, -12, 3, 0, -100],  # window down to -11: -12 and -100 are rounded
        [0, -14, -14, -14, -14, -14],  # exactly at the boundary: exact
        [0, -15, -15, 0, -14, -30],  # one below the boundary: counted (3)
        [0, 50, -14, 0, 0, 0],  # the 2^50 group has only zero codes: it must not set the row scale
        [90, 20, -7, 0, 1, 2],  # all codes zero: a8 = 0, row_scale = 1
        [-127, -127, -127, -127, -127, -127],  # byte 0 (2^-127) sets no row scale (1): all six round to 0, counted
        [0, -3, None, -20, 2, 1],  # NaN scale: that group NaN, not counted; -20 counted
        [127, 127, 100, 127, 127, 127],  # byte 254: 4*2^127 and 6*2^127 overflow to inf in both; 100 counted
        [-120, -127, -126, -113, -114, -110],  # low end, spread 17: -127 and -126 counted
    ]
    zero = [-1] * 6
    codes_of = [zero, zero, zero, [-1, 0, -1, -1, -1, -1], [0] * 6, zero, zero, zero, zero]
    codes, scales = crafted(exps, codes_of)
    a8, row_scale, n = check_fold(codes, scales)
    assert n == 2 + 0 + 3 + 0 + 0 + 6 + 1 + 1 + 2
    assert torch.equal(row_scale[:, 0], torch.tensor([2.0**-3, 2.0**-6, 2.0**-6, 2.0**-6, 1.0, 1.0, 2.0**-4, 2.0**121, 2.0**-116]))
    assert torch.isnan(a8[6, 64:96].float()).all() and not torch.isnan(a8[6, :64].float()).any()
    assert torch.equal(a8[4].float(), torch.zeros(192))


def test_fold_random_codes_and_scale_bytes():
    g = torch.Generator().manual_seed(7)
    codes = torch.randint(0, 256, (64, 4 * 16), generator=g, dtype=torch.uint8)  # [64, K/2], K = 128
    scales = torch.randint(0, 256, (64, 4), generator=g, dtype=torch.uint8)  # includes 0x00 and 0xFF
    codes[::5, :16] = 0  # some all-zero groups
    scales[::3] = torch.randint(110, 140, (scales[::3].shape), generator=g, dtype=torch.uint8)  # mostly foldable rows
    _, _, n = check_fold(codes, scales)
    assert 0 < n < 64 * 4


def test_fold_rejects_bad_inputs():
    with pytest.raises(TypeError):
        hg.fold_mxfp4_fp8(torch.zeros(4, 16, dtype=torch.int32), torch.zeros(4, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="same"):
        hg.fold_mxfp4_fp8(torch.zeros(4, 16, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="2-D"):
        hg.fold_mxfp4_fp8(torch.zeros(2, 4, 16, dtype=torch.uint8), torch.zeros(2, 4, 1, dtype=torch.uint8))


# ----------------------------------------------------------------------------------------------
# NVFP4 -> BF16 (CPU)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NV)
def test_nvfp4_to_bf16_exact(name):
    x = torch.randn(64, 512) * torch.exp(torch.randn(64, 1) * 4)
    x[3, 17] = float("nan")  # its group's scale is NaN
    x[5, 100] = 1e6  # a large tensor amax: small groups get subnormal E4M3 scales
    q = f4.get_quantizer(name).quantize(x, seed=11)
    out = hg.nvfp4_to_bf16(q.codes, q.scales)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert_bits_equal(out, q.block_values())
    assert torch.isnan(out[3, 16:32].float()).all()


def test_nvfp4_to_bf16_every_code_and_scale_byte():
    codes = torch.arange(16, dtype=torch.uint8).repeat(256, 1)  # [256 scale bytes, 16 codes]
    qt = QuantizedTensor(formats.pack_e2m1(codes), torch.arange(256, dtype=torch.uint8)[:, None], ScaleFormat.E4M3, 16, torch.ones(()))
    assert_bits_equal(hg.nvfp4_to_bf16(qt.codes, qt.scales), qt.block_values())


# ----------------------------------------------------------------------------------------------
# gemm_nt (CPU)
# ----------------------------------------------------------------------------------------------


CPU_SCALED_MM = hg.fp8_gemm_available(torch.device("cpu"))  # torch 2.13: True; torch 2.11: False


@pytest.fixture
def scaled_mm_calls(monkeypatch):
    calls = []
    real = torch._scaled_mm

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    return calls


def _operands(name_a: str, name_b: str, m: int = 48, n: int = 40, k: int = 256, device: str = "cpu"):
    x = torch.randn(m, k, device=device) * 3
    w = torch.randn(n, k, device=device) * 0.02
    a = f4.get_quantizer(name_a).quantize(x, seed=1) if name_a else x
    b = f4.get_quantizer(name_b).quantize(w, seed=2) if name_b else w
    return a, b


@pytest.mark.parametrize("pair", [("nvfp4_rtn", "nvfp4_rtn"), ("nvfp4_ms_eden", "nvfp4_4over6"), ("mxfp4_quest", "nvfp4_rtn"), ("nvfp4_rtn", None)])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_gemm_exact_path_cpu(pair, out_dtype, scaled_mm_calls):
    a, b = _operands(*pair)
    if pair[1] is None:
        b = b.bfloat16()  # bf16 operand: still exact in bf16
    out, ref = hg.gemm_nt(a, b, out_dtype), ref_gemm_nt(a, b, torch.float32)
    assert out.dtype == out_dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= 1e-6 + output_rounding(out_dtype)
    assert torch.equal(hg.gemm_nt(a, b, out_dtype), ref_gemm_nt(a, b, out_dtype))  # CPU: same f32 values, same rounding
    assert not scaled_mm_calls


def test_gemm_float32_operand_and_3d_cpu():
    a, b = _operands(None, "nvfp4_rtn")
    a = a.reshape(4, 12, -1)  # [4, 12, K] float32: not exact in bf16 -> float32 GEMM
    out, ref = hg.gemm_nt(a, b, torch.float32), ref_gemm_nt(a, b, torch.float32)
    assert out.shape == (4, 12, 40) and rel_err(out, ref) <= 1e-6
    q = f4.get_quantizer("nvfp4_rtn").quantize(a, seed=3)  # a 3-D quantized operand
    assert rel_err(hg.gemm_nt(q, b, torch.float32), ref_gemm_nt(q, b, torch.float32)) <= 1e-6


def test_gemm_rejects_mismatched_inner_dims():
    a, _ = _operands("nvfp4_rtn", None)
    _, b = _operands(None, "nvfp4_rtn", k=128)
    with pytest.raises(ValueError, match="inner dimensions"):
        hg.gemm_nt(a, b, torch.float32)


@pytest.mark.skipif(not CPU_SCALED_MM, reason="this torch's CPU _scaled_mm has no row-wise FP8 scaling; the MXFP4 path is tested on the GPU")
@pytest.mark.parametrize("pair", [("mxfp4_quest", "mxfp4_quest"), ("mxfp4_tseng_rtn", "mxfp4_tseng_sr"), ("mxfp4_rtn", "mxfp4_tseng_rtn")])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_gemm_mxfp4_fp8_path_cpu(pair, out_dtype, scaled_mm_calls):
    a, b = _operands(*pair)  # N = 40: padded to 48 for _scaled_mm
    out, ref = hg.gemm_nt(a, b, out_dtype), ref_gemm_nt(a, b, torch.float32)
    assert out.dtype == out_dtype and out.shape == (48, 40)
    assert rel_err(out, ref) <= 1e-3 + output_rounding(out_dtype)
    (call,) = scaled_mm_calls
    assert call["use_fast_accum"] is False and call["scale_a"].shape == (48, 1) and call["scale_b"].shape == (1, 48)
    assert hg.fold_stats() == {"groups": (48 + 40) * 256 // 32, "unfoldable_groups": 0}


@pytest.mark.skipif(not CPU_SCALED_MM, reason="this torch's CPU _scaled_mm has no row-wise FP8 scaling")
def test_gemm_mxfp4_nan_rows_spread_and_3d_cpu(scaled_mm_calls):
    x = torch.randn(2, 24, 256)
    x[0, 5, 40] = float("nan")  # row 5 of the output is NaN in the reference
    x[:, :, 96:128] *= 2.0**-20  # one unfoldable group per row
    a = f4.get_quantizer("mxfp4_tseng_rtn").quantize(x, seed=1)
    _, b = _operands(None, "mxfp4_tseng_rtn", n=32)
    out, ref = hg.gemm_nt(a, b, torch.float32), ref_gemm_nt(a, b, torch.float32)
    assert out.shape == (2, 24, 32)
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.isnan(out[0, 5]).all()
    assert rel_err(out, ref) <= 1e-3
    assert len(scaled_mm_calls) == 1
    assert hg.fold_stats()["unfoldable_groups"] == 48


def test_gemm_mxfp4_without_fp8_gemm_takes_exact_path(monkeypatch, scaled_mm_calls):
    monkeypatch.setattr(hg, "fp8_gemm_available", lambda device: False)
    a, b = _operands("mxfp4_tseng_rtn", "mxfp4_quest")
    assert torch.equal(hg.gemm_nt(a, b, torch.float32), ref_gemm_nt(a, b, torch.float32))
    assert not scaled_mm_calls and hg.fold_stats()["groups"] == 0


# ----------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize(("spread", "bound"), [(0, 2e-4), (6, 1e-3)], ids=["gaussian", "groups_2^+-6"])
@pytest.mark.parametrize("name", ["mxfp4_quest", "mxfp4_tseng_rtn"])
def test_gemm_mxfp4_fp8_cuda_4096(name, spread, bound, scaled_mm_calls):
    # Gaussian data: the exact partial sums fit Hopper's FP8 accumulator, measured error 0 (H100).
    # Groups spread over 2^-6..2^6: the sums need more bits; measured 1.5e-4..4.4e-4 (K 4096..16384,
    # spreads 2^+-2..2^+-6) without fast accumulation and 2e-3..6e-3 with it, so 1e-3 catches the latter.
    def data(rows: int) -> torch.Tensor:
        group_scale = torch.exp2(torch.randint(-spread, spread + 1, (rows, 128, 1), device="cuda").float())
        return (torch.randn(rows, 128, 32, device="cuda") * group_scale).reshape(rows, 4096)

    x, w = data(4096), data(4096) * 0.02
    q = f4.get_quantizer(name)
    a, b = q.quantize(x, seed=1), q.quantize(w, seed=2)
    out = hg.gemm_nt(a, b, torch.float32)
    ref = ref_gemm_nt(a, b, torch.float32)
    ref64 = (a.block_values().double() @ b.block_values().double().t()) * (a.alpha.double() * b.alpha.double())
    err, err64 = rel_err(out, ref), rel_err(out, ref64)
    print(f"\n{name} spread 2^+-{spread} 4096^3 FP8 row-wise: rel err vs reference {err:.3e}, vs fp64 {err64:.3e}")
    assert len(scaled_mm_calls) == 1 and hg.fold_stats()["unfoldable_groups"] == 0
    assert err <= bound


@pytest.mark.gpu
@requires_cuda
def test_gemm_nvfp4_bf16_cuda_4096():
    x = torch.randn(4096, 4096, device="cuda")
    w = torch.randn(4096, 4096, device="cuda") * 0.02
    q = f4.get_quantizer("nvfp4_rtn")
    a, b = q.quantize(x), q.quantize(w)
    out = hg.gemm_nt(a, b, torch.bfloat16)
    err = rel_err(out, ref_gemm_nt(a, b, torch.float32))
    err_f32 = rel_err(hg.gemm_nt(a, b, torch.float32), ref_gemm_nt(a, b, torch.float32))
    print(f"\nnvfp4_rtn 4096^3 BF16: rel err vs reference {err:.3e} (bf16 out), {err_f32:.3e} (f32 out)")
    assert out.dtype == torch.bfloat16 and err <= 1e-2
    assert err_f32 <= 1e-5


@pytest.mark.gpu
@requires_cuda
def test_fold_cuda_equals_cpu():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 256, (256, 512), generator=g, dtype=torch.uint8)
    scales = torch.randint(0, 256, (256, 32), generator=g, dtype=torch.uint8)
    a8, rs, n = hg.fold_mxfp4_fp8(codes, scales)
    a8c, rsc, nc = hg.fold_mxfp4_fp8(codes.cuda(), scales.cuda())
    assert torch.equal(a8c.cpu().view(torch.uint8), a8.view(torch.uint8)) and torch.equal(rsc.cpu(), rs) and nc == n
    codes, scales = crafted([[0, -127, -20, None, 127, 5]])
    a8, rs, n = hg.fold_mxfp4_fp8(codes, scales)
    a8c, rsc, nc = hg.fold_mxfp4_fp8(codes.cuda(), scales.cuda())
    assert torch.equal(a8c.cpu().view(torch.uint8), a8.view(torch.uint8)) and torch.equal(rsc.cpu(), rs) and nc == n


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gemm_mxfp4_edge_cases_cuda(out_dtype, scaled_mm_calls):
    x = torch.randn(3, 40, 512, device="cuda")
    x[1, 7, 3] = float("nan")
    x[..., 64:96] *= 2.0**-20
    a = f4.get_quantizer("mxfp4_tseng_rtn").quantize(x, seed=1)
    b = f4.get_quantizer("mxfp4_quest").quantize(torch.randn(72, 512, device="cuda"), seed=2)  # N = 72: padded
    out, ref = hg.gemm_nt(a, b, out_dtype), ref_gemm_nt(a, b, torch.float32)
    assert out.shape == (3, 40, 72) and out.dtype == out_dtype
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.isnan(out[1, 7]).all()
    bound = 2e-4 + output_rounding(out_dtype)
    err = rel_err(out, ref)
    print(f"\nedge cases {out_dtype}: rel err {err:.3e}")
    assert err <= bound and len(scaled_mm_calls) == 1
    assert hg.fold_stats() == {"groups": (120 + 72) * 16, "unfoldable_groups": 120}
