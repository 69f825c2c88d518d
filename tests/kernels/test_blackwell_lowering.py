"""Claims about the ``blackwell`` target (the triton lowering with Blackwell's native FP4 GEMM), proved on the CPU
under TRITON_INTERPRET=1 (or on a GPU); no Blackwell GPU ran any of it. The native GEMM's call is replaced here by
its plain-PyTorch twin (``ScaledMmCall.emulate``), which test_blackwell_layout.py checks against the reference.

* The quantize kernel's ``fp4`` form writes the packed codes and the scale bytes in the 128x4 blocked layout
  directly: bytes equal ``formats.to_blocked`` of the plain scales of the same quantization (padding rows and
  columns 0), for Quartet's and Quartet II's quantizers, along rows and read transposed, from a dense source and
  re-quantizing a saved one; with ``keep_packed`` the plain outputs equal the packed launch's.
* The layout plan gives ``fp4`` to the GEMMs whose pair of quantizers the native GEMM takes (MXFP4 groups of 32,
  NVFP4 groups of 16) and pads their backward inner dimension to 32; the others keep the Hopper forms.
* The ops on the ``blackwell`` target match the reference lowering: bit-identical packed forward outputs, the
  output GEMM within one BF16 rounding (the MXFP4 GEMM writes BF16), the backward GEMMs within the floors of the
  ``triton`` target; N not a multiple of 16 (padded b rows) included; the fake (meta) outputs have the real shapes.
* Selection: ``auto`` picks ``blackwell`` on compute capability 10.x only when the probe passes, else ``triton``
  with the probe's reason; the probe reports a native GEMM that fails or computes wrong numbers.
"""

from __future__ import annotations

import pytest
import torch

import fp4compile  # noqa: F401  (registers torch.ops.fp4compile)
from fp4compile import formats
from fp4compile.config import get_recipe
from fp4compile.lowering import blackwell as bw
from fp4compile.lowering.layout_plan import Form, plan_linear
from fp4compile.quantizers import get_quantizer
from fp4compile.rotations import parse_rotation
from tests.conftest import kernel_device, requires_triton, run_linear_ops, sqnr_db

DEV = kernel_device()


@pytest.fixture
def emulated_blackwell(monkeypatch):
    """The native GEMM as its plain-PyTorch twin, on any device."""
    monkeypatch.setattr(bw, "check_blackwell", lambda device=None: (10, 0))
    monkeypatch.setattr(bw.ScaledMmCall, "execute", bw.ScaledMmCall.emulate)


# ----------------------------------------------------------------------------------------------
# The quantize kernel's fp4 form
# ----------------------------------------------------------------------------------------------

CASES = [  # (quantizer, rotation, transposed read)
    ("mxfp4_quest", "hadamard-32", False),
    ("mxfp4_tseng_rtn", "random_hadamard-32", True),
    ("nvfp4_4over6", "none", False),
    ("nvfp4_ms_eden", "random_hadamard-128", True),
    ("nvfp4_rtn", "none", True),
]


def _prepared(rotation: str, seed: int):
    from fp4compile.kernels.rotate_quantize import prepare_rotation

    return prepare_rotation(parse_rotation(rotation), seed, torch.device(DEV))


@requires_triton
@pytest.mark.parametrize("name,rotation,transposed", CASES)
@pytest.mark.parametrize("rows", [200, 128])  # 200: the blocked layout pads rows to 256
def test_fp4_form_writes_blocked_scales(name, rotation, transposed, rows):
    from fp4compile.kernels.quantize import quantize, quantize_for_gemm

    torch.manual_seed(rows)
    q = get_quantizer(name)
    k = 384 if rotation.endswith("128") else 96  # 96: 3 MXFP4 / 6 NVFP4 scale columns, padded to 4 / 8
    x = (torch.randn(k, rows) if transposed else torch.randn(rows, k)).to(DEV, torch.bfloat16)
    x = x * torch.exp2(torch.randint(-6, 7, x.shape, device=DEV)).to(x.dtype)  # scales spread over many binades
    m = _prepared(rotation, 5)
    packed, _ = quantize(x, q, m, 41, transpose=transposed, pad_to=32)
    op, kept, _ = quantize_for_gemm(x, q, m, 41, form="fp4", keep_packed=True, transpose=transposed, pad_to=32)
    backward, none, _ = quantize_for_gemm(x, q, m, 41, form="fp4", transpose=transposed, pad_to=32)
    assert none is None and isinstance(op, bw.Fp4Operand)
    assert op.recipe is (bw.Fp4Recipe.MXFP4 if q.group_size == 32 else bw.Fp4Recipe.NVFP4)
    blocked = formats.to_blocked(packed.scales.cpu())
    for o in (op, backward):
        assert o.data.dtype == torch.float4_e2m1fn_x2 and o.data.shape == packed.codes.shape
        assert torch.equal(o.data.view(torch.uint8).cpu(), packed.codes.cpu())
        assert torch.equal(o.scales_blocked.view(torch.uint8).cpu(), blocked)  # padding included: zeros
        assert torch.equal(o.alpha.cpu(), packed.alpha.cpu())
    assert torch.equal(kept.codes.cpu(), packed.codes.cpu()) and torch.equal(kept.scales.cpu(), packed.scales.cpu())


@requires_triton
def test_fp4_form_of_a_saved_tensor():
    """The backward's re-quantization (saved Xq read transposed) writes the same blocked bytes as to_blocked."""
    from fp4compile.kernels.quantize import quantize, quantize_for_gemm

    torch.manual_seed(9)
    q = get_quantizer("mxfp4_tseng_rtn")
    saved, _ = quantize(torch.randn(160, 64, device=DEV, dtype=torch.bfloat16), get_quantizer("mxfp4_quest"), _prepared("hadamard-32", 0), 0)
    m = _prepared("random_hadamard-32", 3)
    packed, _ = quantize(saved, q, m, 7, pad_to=32)  # [64, 160]: along the saved tensor's rows
    op, _, _ = quantize_for_gemm(saved, q, m, 7, form="fp4", pad_to=32)
    assert torch.equal(op.data.view(torch.uint8).cpu(), packed.codes.cpu())
    assert torch.equal(op.scales_blocked.view(torch.uint8).cpu(), formats.to_blocked(packed.scales.cpu()))


@requires_triton
def test_fp4_form_refuses_groups_the_native_gemm_does_not_take():
    import dataclasses

    from fp4compile.kernels.quantize import quantize_for_gemm

    mx16 = dataclasses.replace(get_quantizer("mxfp4_quest"), group_size=16)  # E8M0 in groups of 16: no hardware recipe
    with pytest.raises(ValueError, match="E8M0 scales, groups of 32"):
        quantize_for_gemm(torch.randn(32, 64, device=DEV), mx16, None, 0, form="fp4")


# ----------------------------------------------------------------------------------------------
# The layout plan
# ----------------------------------------------------------------------------------------------


def test_layout_plan_of_the_blackwell_target():
    def forms(recipe):
        return {(p.gemm, p.operand): (p.form, p.pad_to) for p in plan_linear(get_recipe(recipe), "blackwell", "cpu")}

    quartet = forms("quartet")
    assert quartet[("output", "input")] == (Form.FP4, 32) and quartet[("output", "weight")][0] is Form.FP4
    assert {quartet[(g, o)] for g, o in quartet if g != "output"} == {(Form.FP4, 32)}
    nvidia = forms("nvidia")  # grad_input multiplies a BF16 weight: the Hopper form; grad_weight NVFP4 x NVFP4 (RHT16)
    assert nvidia[("output", "input")][0] is Form.FP4
    assert nvidia[("grad_input", "grad_output")][0] is Form.BF16 and nvidia[("grad_input", "weight")][0] is Form.BF16
    assert nvidia[("grad_weight", "grad_output")] == (Form.FP4, 32) == nvidia[("grad_weight", "input")]
    quartet2 = forms("quartet2")  # Hadamard-128 along the backward's inner dimension
    assert quartet2[("grad_input", "grad_output")] == (Form.FP4, 128)
    triton = {(p.gemm, p.operand): p.form for p in plan_linear(get_recipe("quartet"), "triton", "cpu")}
    assert Form.FP4 not in triton.values()


# ----------------------------------------------------------------------------------------------
# The ops on the blackwell target, against the reference lowering
# ----------------------------------------------------------------------------------------------

FLOORS = {"quartet": 30, "quartet2": 8, "nvidia": 8, "mxfp4-rtn": 30}


@requires_triton
@pytest.mark.parametrize("recipe", list(FLOORS))
def test_blackwell_ops_match_reference_ops(recipe, emulated_blackwell):
    torch.manual_seed(1)
    t, k, n = 96, 128, 40  # N = 40: the output GEMM pads b's rows to 48; T and N padded in the backward
    x, w, e = torch.randn(t, k, device=DEV), torch.randn(n, k, device=DEV) / k**0.5, torch.randn(t, n, device=DEV)
    seed = torch.tensor(77, dtype=torch.int64)
    forms = {p.operand: p.form.value for p in plan_linear(get_recipe(recipe), "blackwell", DEV) if p.gemm == "output"}
    assert forms == {"input": "fp4", "weight": "fp4"}
    xq_r, wq_r, y_r, dx_r, dw_r = run_linear_ops(x, w, e, recipe, seed, "reference", "packed", "packed")
    xq_b, wq_b, y_b, dx_b, dw_b = run_linear_ops(x, w, e, recipe, seed, "blackwell", "fp4", "fp4")
    for a, b in zip(xq_r[:4] + wq_r[:4], xq_b[:4] + wq_b[:4], strict=True):  # the packed outputs, saved for the backward
        assert torch.equal(a.cpu().reshape(-1), b.cpu().reshape(-1))
    assert torch.equal(xq_b[4].cpu(), formats.to_blocked(xq_r[1].cpu()))  # the blocked scales the GEMM read
    assert y_b.shape == y_r.shape == (t, n) and y_b.is_contiguous()
    sq = {"output": sqnr_db(y_b, y_r), "grad_input": sqnr_db(dx_b, dx_r), "grad_weight": sqnr_db(dw_b, dw_r)}
    print(recipe, {key: round(v, 1) for key, v in sq.items()})
    assert sq["output"] > 45  # same FP4 values; the MXFP4 GEMM writes BF16 (~54 dB), NVFP4's FP32
    assert sq["grad_input"] > FLOORS[recipe] and sq["grad_weight"] > FLOORS[recipe]


@requires_triton
def test_fake_quantize_of_the_fp4_form_has_the_real_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = torch.randn(200, 96, device=DEV)
    seed = torch.tensor(3, dtype=torch.int64)
    real = torch.ops.fp4compile.quantize(x, "quartet", "input", seed, 0, "blackwell", "fp4")
    with FakeTensorMode() as mode:
        fake = torch.ops.fp4compile.quantize(mode.from_tensor(x), "quartet", "input", mode.from_tensor(seed), 0, "blackwell", "fp4")
    assert [(r.shape, r.dtype) for r in real] == [(f.shape, f.dtype) for f in fake]
    assert real[4].numel() == 256 * 4  # rows padded to 256, 3 scale columns to 4


# ----------------------------------------------------------------------------------------------
# Selection and the probe
# ----------------------------------------------------------------------------------------------


def test_auto_picks_blackwell_only_when_the_probe_passes(monkeypatch):
    from fp4compile.lowering import select

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(select, "_has_triton", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    monkeypatch.setattr(bw, "native_gemm_problem", lambda device=None: None)
    kernel, reason = select.auto_target(cuda)
    assert kernel == "blackwell" and "passed the probe" in reason and "not yet run on a Blackwell GPU" in reason
    monkeypatch.setattr(bw, "native_gemm_problem", lambda device=None: "the native mxfp4 GEMM failed: RuntimeError: no kernel")
    kernel, reason = select.auto_target(cuda)
    assert kernel == "triton" and "no kernel" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert select.auto_target(cuda)[0] == "triton"
    assert select.auto_target(torch.device("cpu"))[0] == "reference"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU answer")
def test_probe_without_a_gpu_names_the_reason():
    assert "no CUDA GPU" in bw.native_gemm_problem()


def test_probe_reports_a_failing_or_wrong_gemm(monkeypatch, emulated_blackwell):
    from fp4compile.reference.gemm import gemm_nt as reference_gemm_nt

    cpu = torch.device("cpu")
    assert bw._probe(cpu, reference_gemm_nt) is None  # the twin computes what the reference does
    monkeypatch.setattr(bw, "gemm_nt", lambda a, b, out_dtype: reference_gemm_nt(a, b, out_dtype) * 1.01)
    assert "differs from the reference by 1.00e-02" in bw._probe(cpu, reference_gemm_nt)

    def broken(a, b, out_dtype):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")

    monkeypatch.setattr(bw, "gemm_nt", broken)
    assert bw._probe(cpu, reference_gemm_nt) == "the native mxfp4 GEMM failed: RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED"


def test_explicit_blackwell_target_names_the_probe_reason(monkeypatch):
    from fp4compile.lowering import select
    from fp4compile.options import KernelTarget

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(select, "_has_triton", lambda: True)
    monkeypatch.setattr(bw, "native_gemm_problem", lambda device=None: "cuda:0 is NVIDIA H200 with compute capability 9.0")
    with pytest.raises(RuntimeError, match=r"'blackwell' cannot run here: cuda:0 is NVIDIA H200 with compute capability 9\.0; use 'auto'"):
        select.check_target(KernelTarget.BLACKWELL)
    monkeypatch.setattr(bw, "native_gemm_problem", lambda device=None: None)
    select.check_target(KernelTarget.BLACKWELL)  # a 10.x GPU whose probe passed
