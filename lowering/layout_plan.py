"""Scale-layout planning: for every quantized operand of a linear layer, the form its quantize kernel writes.

A quantization has up to two consumers: the GEMM that multiplies it now, and the backward that re-reads
it later (saved). Each wants its own form, and one quantize launch writes both (``keep_packed``; the FP8 form
then takes a second, light launch that folds the packed codes, since no FP8 byte of a row can be written before
its largest scale is known):

    packed    E2M1 codes [R, K/2] + scale bytes [R, K/g] (+ trust-mask bits): what is saved for the
              backward (0.53 bytes/element) and what the reference lowering multiplies
    fp8       MXFP4 folded exactly into FP8 e4m3 [R, K] + one FP32 scale per row: Hopper's FP8 tensor cores
    bf16      NVFP4 ``q * s8`` as BF16 [R, K] (exact): Hopper's BF16 tensor cores
    fp4       packed E2M1 codes [R, K/2] + the scale bytes in the 128x4 blocked layout: Blackwell's native
              block-scaled FP4 GEMM (the ``blackwell`` target, lowering/blackwell.py; MXFP4 x MXFP4 in groups
              of 32 or NVFP4 x NVFP4 in groups of 16, inner dimension padded to 32; other GEMMs of the recipe
              keep the Hopper forms)
    high      not quantized (a recipe operand left in high precision)

The six operands (``y = X W^T``, ``dX = E W``, ``dW = E^T X``), each along its GEMM's inner dimension:

    output       X [T,K] along K, W [N,K] along K
    grad_input   E [T,N] along N, W^T along N (from the saved Wq, or from W)
    grad_weight  E^T along T (E read transposed), X^T along T (from the saved Xq, or from X)

Backward inner dimensions are zero-padded up to the quantizers' groups (exact); the forward's K must fit.
Not planned here: one launch serving a tensor along both axes. Session 11
built the latter for Quartet's backward Xq^T / Wq^T (the forward's launch re-quantizing its own tile's values
transposed, bit-exact against the backward's re-quantization) and dropped it as measured: on an H200 at 16384 x
4096 the fused launch took 0.41-0.44 ms against 0.35 for the forward launch plus the backward's re-quantization
(bench_kernels.py --graphs; docs/bench_logs/bench_kernels_fused_requant_h200_s11.log). The kernels are bound by
instruction issue, and the fused one issued as many instructions (72 per element against 42 + 25) at twice the
registers (168: 12 warps per SM).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum

import torch

from fp4compile.config import Recipe, Source
from fp4compile.quantized import ScaleFormat
from fp4compile.quantizers import get_quantizer


class Form(str, Enum):
    PACKED = "packed"
    FP8 = "fp8"
    BF16 = "bf16"
    FP4 = "fp4"
    HIGH = "high"


@dataclass(frozen=True)
class OperandPlan:
    gemm: str  # "output" | "grad_input" | "grad_weight"
    operand: str  # "input" | "weight" | "grad_output"
    source: str  # what the kernel reads, e.g. "X", "Wq (saved, read transposed)", "E^T (E read transposed)"
    axis: str  # the quantization (inner) dimension: "K", "N" or "T"
    quantizer: str | None
    form: Form  # what its GEMM multiplies
    keep_packed: bool  # the same launch also writes the packed form, saved for the backward
    pad_to: int  # the axis is zero-padded to a multiple of this (1: none)

    def describe(self) -> str:
        extra = " + packed (saved)" if self.keep_packed and self.form is not Form.PACKED else ""
        if self.pad_to <= 1:
            pad = ""
        elif self.gemm == "output":  # the forward's K must fit the groups (apply_policy skips a layer where it does not)
            pad = f" ({self.axis} a multiple of {self.pad_to})"
        else:  # the backward's inner dimensions are zero-padded, which is exact
            pad = f", {self.axis} zero-padded to a multiple of {self.pad_to}"
        return f"{self.gemm}.{self.operand}: {self.source} along {self.axis} -> {self.form.value}{extra}{pad}"


def _fp8_capable(device: torch.device) -> bool:
    from fp4compile.lowering.hopper_gemm import fp8_gemm_available

    return fp8_gemm_available(device)  # CUDA sm_89+, or a CPU torch whose _scaled_mm takes row-wise scales


def _kernel_rule(name: str | None) -> bool:
    if name is None:
        return False
    from fp4compile.kernels.quantize import supports

    return supports(get_quantizer(name))


def _native_fp4(a: str | None, b: str | None) -> bool:
    """Whether Blackwell's block-scaled GEMM takes this pair: both quantized by kernel rules, one hardware recipe for
    both (``lowering.blackwell.fp4_recipe``: MXFP4 in groups of 32 or NVFP4 in groups of 16)."""
    if not (_kernel_rule(a) and _kernel_rule(b)):
        return False
    from fp4compile.lowering.blackwell import fp4_recipe

    try:
        return fp4_recipe(get_quantizer(a)) is fp4_recipe(get_quantizer(b))
    except ValueError:  # a format or group size the hardware does not take
        return False


def gemm_form(kernel: str, a: str | None, b: str | None, device: torch.device) -> Form:
    """The form both operands of one GEMM take (``a``/``b`` quantizer names; None = high precision). The ``blackwell``
    target multiplies the pairs its native GEMM takes in FP4 and every other GEMM as ``triton`` does."""
    if kernel == "blackwell":
        if _native_fp4(a, b):
            return Form.FP4
        kernel = "triton"
    if kernel != "triton" or not (_kernel_rule(a) or _kernel_rule(b)):
        return Form.PACKED
    fmts = {get_quantizer(q).scale_format for q in (a, b) if q is not None}
    groups = {get_quantizer(q).group_size for q in (a, b) if q is not None}
    both = a is not None and b is not None
    if fmts == {ScaleFormat.E8M0} and both and len(groups) == 1 and _kernel_rule(a) and _kernel_rule(b) and _fp8_capable(device):
        return Form.FP8
    if fmts == {ScaleFormat.E4M3} and all(q is None or _kernel_rule(q) for q in (a, b)):
        return Form.BF16
    return Form.PACKED


def _backward_multiple(inner: int, form: Form) -> int:
    """What a backward GEMM's inner dimension is zero-padded to: its quantizers' groups and rotation, and 32 for the
    native FP4 GEMM (K/2 bytes a multiple of 16)."""
    from fp4compile.lowering.blackwell import K_MULTIPLE

    return math.lcm(inner, K_MULTIPLE) if form is Form.FP4 else inner


@functools.lru_cache(maxsize=256)
def _plan(recipe: Recipe, kernel: str, device: torch.device, needs_x: bool, needs_w: bool) -> tuple[OperandPlan, ...]:
    out, gi, gw = recipe.output, recipe.grad_input, recipe.grad_weight
    f_out = gemm_form(kernel, out.a, out.b, device) if out.quantized else Form.HIGH
    k_mult = out.inner_multiple()
    w_saved = recipe.weight_for_backward is Source.QUANTIZED and out.b is not None
    x_saved = recipe.input_for_backward is Source.QUANTIZED and out.a is not None
    plans = [
        OperandPlan("output", "input", "X", "K", out.a, f_out if out.a else Form.HIGH, x_saved and needs_x, k_mult),
        OperandPlan("output", "weight", "W", "K", out.b, f_out if out.b else Form.HIGH, w_saved and needs_w, k_mult),
    ]
    if gi.quantized or recipe.weight_for_backward is Source.QUANTIZED:
        f = gemm_form(kernel, gi.a, gi.b, device)
        m = _backward_multiple(gi.inner_multiple(), f)
        if gi.b is None and w_saved:  # the forward's Wq multiplied as it is (NVIDIA's recipe)
            w_src, w_form = "Wq (saved, reused)", Form.BF16 if f is Form.BF16 else Form.PACKED
        else:
            w_src, w_form = ("Wq (saved, read transposed)" if w_saved else "W (read transposed)"), (f if gi.b else Form.HIGH)
        plans += [
            OperandPlan("grad_input", "grad_output", "E", "N", gi.a, f if gi.a else Form.HIGH, False, m),
            OperandPlan("grad_input", "weight", w_src, "N", gi.b, w_form, False, m),
        ]
    if gw.quantized:
        f = gemm_form(kernel, gw.a, gw.b, device)
        m = _backward_multiple(gw.inner_multiple(), f)
        x_src = "Xq (saved, read transposed)" if x_saved else "X (read transposed)"
        plans += [
            OperandPlan("grad_weight", "grad_output", "E^T (E read transposed)", "T", gw.a, f if gw.a else Form.HIGH, False, m),
            OperandPlan("grad_weight", "input", x_src, "T", gw.b, f if gw.b else Form.HIGH, False, m),
        ]
    return tuple(plans)


def plan_linear(recipe: Recipe, kernel: str, device: torch.device | str, *, needs_x: bool = True, needs_w: bool = True) -> tuple[OperandPlan, ...]:
    """The operands of one linear layer under ``recipe`` on ``kernel`` (``needs_x``/``needs_w``: whether
    the backward re-reads the quantized X / W at all, i.e. whether grad_weight / grad_input exist)."""
    return _plan(recipe, kernel, torch.device(device), needs_x, needs_w)


def operand(plans: tuple[OperandPlan, ...], gemm: str, name: str) -> OperandPlan:
    return next(p for p in plans if p.gemm == gemm and p.operand == name)
