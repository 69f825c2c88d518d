"""Claims about the layout plan (lowering/layout_plan.py, passes/plan_layouts.py):

* the reference lowering multiplies the packed form; the triton lowering asks the quantize kernels for
  folded FP8 (MXFP4 pairs, where this torch has a row-wise FP8 GEMM) or exact BF16 (NVFP4), and for the
  packed copy only where the backward re-reads the forward's quantization;
* every quantized site carries its GEMM's operand plans, and explain() prints them.
"""

from __future__ import annotations

import torch

import fp4compile
from fp4compile.config import get_recipe
from fp4compile.lowering.hopper_gemm import fp8_gemm_available
from fp4compile.lowering.layout_plan import Form, operand, plan_linear


def _forms(recipe: str, kernel: str) -> dict[tuple[str, str], Form]:
    return {(p.gemm, p.operand): p.form for p in plan_linear(get_recipe(recipe), kernel, "cpu")}


def test_reference_lowering_plans_the_packed_form():
    assert set(_forms("quartet", "reference").values()) == {Form.PACKED}


def test_triton_lowering_plans_tensor_core_forms():
    mx = Form.FP8 if fp8_gemm_available(torch.device("cpu")) else Form.PACKED
    assert set(_forms("quartet", "triton").values()) == {mx}
    assert set(_forms("mxfp4-rtn", "triton").values()) == {mx}
    assert set(_forms("quartet2", "triton").values()) == {Form.BF16}
    nvidia = _forms("nvidia", "triton")
    assert nvidia[("grad_input", "weight")] is Form.BF16  # the forward's Wq, reused as exact BF16 values


def test_saved_copies_follow_the_recipe_and_the_backward():
    quartet = plan_linear(get_recipe("quartet"), "triton", "cpu")
    assert operand(quartet, "output", "input").keep_packed and operand(quartet, "output", "weight").keep_packed
    assert operand(quartet, "grad_weight", "input").source.startswith("Xq (saved")
    nvidia = plan_linear(get_recipe("nvidia"), "triton", "cpu")
    assert not operand(nvidia, "output", "input").keep_packed  # NVIDIA's dW reads the high-precision X
    frozen = plan_linear(get_recipe("quartet"), "triton", "cpu", needs_x=False)
    assert not operand(frozen, "output", "input").keep_packed  # no grad_weight: nothing re-reads Xq
    assert operand(quartet, "grad_input", "grad_output").pad_to == 32


def test_explain_shows_the_plan_per_site():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
    report = fp4compile.explain(model, torch.randn(16, 64, requires_grad=True), recipe="quartet2", baseline=False)
    quantized = [s for s in report.sites if s.quantized]
    assert quantized and all(s.layout for s in quantized)
    assert all({p.gemm for p in s.layout} == {"output" if s.role.value == "forward" else s.role.value} for s in quantized)
    text = str(report)
    assert "layout plan" in text and "grad_weight.input: Xq (saved, read transposed) along T -> packed" in text
