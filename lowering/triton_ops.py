"""The ``triton`` and ``blackwell`` lowerings of the fp4compile ops: fused rotate-quantize kernels + Hopper or native FP4 GEMMs.

Same contract and same arithmetic as the reference executor (``fp4compile.reference.linear``), op by op,
with every operand written in the form the layout plan chose for its GEMM (lowering/layout_plan.py):

    quantize      X or W [R, K] along K: one kernel launch writes the packed form (saved for the backward)
                  and the GEMM-ready values (MXFP4: folded FP8 + row scales; NVFP4: exact BF16)
    output_gemm   row-wise scaled FP8 GEMM (cuBLAS) or BF16 GEMM with FP32 accumulation, then alpha + cast; on
                  the ``blackwell`` target, Blackwell's block-scaled FP4 GEMM where the plan's form is ``fp4``
                  (codes + 128x4 blocked scales, written by the same quantize launch; lowering/blackwell.py)
    grad_input    E [T, N] along N (its column blocks, a fused layer's parts, each into its slice) and W^T along N (from the packed forward W read transposed, or from W),
                  each straight into its GEMM form; GEMM (written in BF16 for a BF16 gradient: ``ref.grad_gemm_dtype``; the
                  exact-product BF16 GEMM keeps FP32, its alpha still to apply); one epilogue pass: alpha, mask, inverse rotation, cast
    grad_weight   E^T along T and X^T along T, both read transposed by the kernel; GEMM; the same epilogue

No host synchronization, and nothing a CUDA graph replay would freeze: seeds stay on the device
(``seeds.DeviceSeed``), random rotation matrices are formed there from them each call, and constants
are cached on the device (``fp4compile.persistent``). Differences from the reference, by design: stochastic rounding draws
counter-based uniforms in the kernel (statistically equivalent, not the reference's bits), and the FP8 GEMM
accumulates at the tensor cores' precision (about 1e-4 relative, hopper.md). A quantizer without a kernel
rule (a plug-in) runs through the reference for that operand.
"""

from __future__ import annotations

import torch

from fp4compile import formats
from fp4compile.config import Recipe, Source
from fp4compile.kernels.epilogue import mask_rotate_cast, supports_width
from fp4compile.kernels.quantize import quantize as kernel_quantize
from fp4compile.kernels.quantize import quantize_for_gemm, supports
from fp4compile.kernels.rotate_quantize import PreparedRotation, device_rotation, prepare_rotation
from fp4compile.lowering.blackwell import Fp4Operand, gemm_operands
from fp4compile.lowering.hopper_gemm import block_values_bf16, gemm_accumulate
from fp4compile.lowering.layout_plan import Form, OperandPlan, operand, plan_linear
from fp4compile.quantized import QuantizedTensor
from fp4compile.quantizers import get_quantizer
from fp4compile.reference import linear as ref
from fp4compile.reference.gemm import Operand
from fp4compile.rotations import Rotation
from fp4compile.seeds import Seed, host_seed, sub_seed


def _operand(src, plan: OperandPlan, rotation: Rotation, m: PreparedRotation | None, rot_seed: Seed, seed: Seed, *, transpose: bool = False) -> Operand:
    """Quantize ``src`` (dense, or packed read transposed) along its (transposed) last axis, into ``plan.form``.

    ``m`` is ``rotation`` prepared once per GEMM (``prepare_rotation``): both operands share the draw.

    Falls back to the reference composition for quantizers without a kernel rule and for operands left in
    high precision (``plan.quantizer is None``); the reference reads its seeds on the host (a sync, which
    also keeps such recipes out of CUDA graphs: backend.cudagraph_blocker).
    """
    q = None if plan.quantizer is None else get_quantizer(plan.quantizer)
    if q is not None and supports(q):
        if plan.form in (Form.FP8, Form.BF16, Form.FP4):
            values, _, _ = quantize_for_gemm(src, q, m, seed, form=plan.form.value, transpose=transpose, pad_to=plan.pad_to)
            return values
        out, _ = kernel_quantize(src, q, m, seed, transpose=transpose, pad_to=plan.pad_to)
        return out
    if isinstance(src, list):  # column blocks of E
        src = ref.whole_gradient(src)
    dense = src.dequantize().t() if isinstance(src, QuantizedTensor) else (src.t() if transpose else src)
    pad = (-dense.shape[-1]) % plan.pad_to
    dense = torch.nn.functional.pad(dense.float(), (0, pad)) if pad else dense.float()
    rotated = rotation.apply(dense, host_seed(rot_seed) if rotation.is_random else None)
    return rotated if q is None else q.quantize(rotated, host_seed(seed))


def quantize(t: torch.Tensor, recipe: Recipe, operand_name: str, seed: Seed, form: str):
    """The forward's X or W: the op's six outputs (``ops.quantize``), in the ``form`` its target's layout plan chose."""
    spec = recipe.output
    name = spec.a if operand_name == "input" else spec.b
    q = get_quantizer(name)
    rot_seed, q_seed = ref.rotation_seed(seed, "output"), sub_seed(seed, "output", operand_name)
    def empty() -> torch.Tensor:  # a fresh one each time: op outputs may not alias each other
        return torch.empty(0, dtype=torch.uint8, device=t.device)

    if not supports(q):  # a plug-in quantizer: the reference, packed form only
        out = q.quantize(spec.rotation.apply(t, host_seed(rot_seed) if spec.rotation.is_random else None), host_seed(q_seed))
        mask = formats.pack_bits(out.mask) if out.mask is not None else empty()
        return out.codes, out.scales, out.tensor_scale.reshape(()).float(), mask, empty(), empty()
    m = prepare_rotation(spec.rotation, rot_seed, t.device)
    if form == "packed":
        out, mask = kernel_quantize(t, q, m, q_seed)
        return out.codes, out.scales, out.tensor_scale.reshape(()).float(), (mask if mask is not None else empty()), empty(), empty()
    values, out, mask = quantize_for_gemm(t, q, m, q_seed, form=form, keep_packed=True)
    if isinstance(values, Fp4Operand):  # the codes are out.codes already: the blocked scale bytes are what is new
        gemm_values, row_scale = values.scales_blocked.view(torch.uint8), empty()
    else:
        gemm_values, row_scale = values.values, (values.row_scale if values.row_scale is not None else empty())
    return out.codes, out.scales, out.tensor_scale.reshape(()).float(), (mask if mask is not None else empty()), gemm_values, row_scale


def _accumulate(a, b, out_dtype: torch.dtype = torch.float32):
    """``a @ b^T`` and the alpha still to apply: Blackwell's native FP4 GEMM for two Fp4Operands (alpha applied,
    ``out_dtype`` written), else the Hopper GEMMs (``hopper_gemm.gemm_accumulate``)."""
    if isinstance(a, Fp4Operand) and isinstance(b, Fp4Operand):
        return gemm_operands(a, b, out_dtype), None
    return gemm_accumulate(a, b, fp8_out_dtype=out_dtype)


def output_gemm(xq, wq, out_dtype: torch.dtype) -> torch.Tensor:
    # === GEMM 1: y = Xq @ Wq^T   [T,K] @ [K,N] -> [T,N]
    acc, alpha = _accumulate(xq, wq, out_dtype)
    return _epilogue(acc, alpha, None, None, out_dtype)


def _epilogue(acc: torch.Tensor, alpha, mask: torch.Tensor | None, inverse: PreparedRotation | None, out_dtype: torch.dtype) -> torch.Tensor:
    """``((acc * alpha * mask) @ blockdiag(M^T)).to(out_dtype)`` in one kernel pass when the width allows.

    ``alpha``: None (applied already), 1.0 (operands without one), a device scalar tensor (read by the kernel),
    or a host scalar (MXFP4 factors: multiplied here as a scalar argument, no host-to-device copy).
    """
    if isinstance(alpha, float) and alpha == 1.0:
        alpha = None
    if alpha is not None and not (isinstance(alpha, torch.Tensor) and alpha.device == acc.device):
        acc, alpha = acc.float() * alpha, None
    if mask is None and inverse is None and alpha is None:
        return acc.to(out_dtype)
    if supports_width(acc.shape[-1], inverse):
        return mask_rotate_cast(acc, mask, inverse, out_dtype, alpha=alpha)
    g = acc.float() if alpha is None else acc.float() * alpha  # widths the kernel does not take: torch ops, same order
    if mask is not None:
        g = g * formats.unpack_bits(mask)[..., : g.shape[-1]]
    if inverse is not None:
        h, scale = device_rotation(inverse, g.device)
        g = ((g.unflatten(-1, (-1, h.shape[0])) @ h) * torch.tensor(scale, dtype=torch.float32)).flatten(-2)
    return g.to(out_dtype)


def _finish(acc: torch.Tensor, alpha, mask_bits: torch.Tensor | None, k: int, recipe: Recipe, seed: Seed, out_dtype: torch.dtype) -> torch.Tensor:
    """Alpha, trust mask, inverse forward rotation and cast of a backward GEMM's result, in one pass."""
    acc = acc[..., :k]
    mask = mask_bits if mask_bits is not None and recipe.mask_gradients else None
    rotation = recipe.output.rotation
    inverse = prepare_rotation(rotation, ref.rotation_seed(seed, "output"), acc.device, inverse=True)
    return _epilogue(acc, alpha, mask, inverse, out_dtype)


def grad_input(grad: list[torch.Tensor], wq: QuantizedTensor | None, w_hp, x_mask, k: int, recipe: Recipe, seed: Seed, out_dtype,
               kernel: str = "triton") -> torch.Tensor:
    """``grad``: E's column blocks [T, N_i] (one, or a fused layer's parts)."""
    spec = recipe.grad_input
    device = grad[0].device
    plans = plan_linear(recipe, kernel, device)
    pe, pw = operand(plans, "grad_input", "grad_output"), operand(plans, "grad_input", "weight")
    rseed = ref.rotation_seed(seed, "backward")
    m = prepare_rotation(spec.rotation, rseed, device)  # one draw for both operands
    # === GEMM 2: grad_input = Q(E R) @ Q(W^T R)^T   [T,N] @ [N,K] -> [T,K]
    e_q = _operand(grad, pe, spec.rotation, m, rseed, sub_seed(seed, "grad_input", "grad_output"))
    if recipe.weight_for_backward is Source.QUANTIZED and wq is not None and spec.b is None and spec.rotation.is_identity:
        # the forward Wq reused as is (NVIDIA's recipe): its exact BF16 block values, transposed, and its alpha
        w_t = block_values_bf16(wq).t()  # [K, N]
        pad = (-w_t.shape[1]) % pw.pad_to
        w_t = torch.nn.functional.pad(w_t, (0, pad)) if pad else w_t
        acc, alpha = _accumulate(e_q, w_t, ref.grad_gemm_dtype(out_dtype))
        return _finish(acc, wq.alpha if alpha is None else alpha * wq.alpha, x_mask, k, recipe, seed, out_dtype)
    w_seed = sub_seed(seed, "grad_input", "weight")
    if recipe.weight_for_backward is Source.QUANTIZED and wq is not None:
        w_q = _operand(wq, pw, spec.rotation, m, rseed, w_seed)  # packed [N, K], read transposed as W^T [K, N]
    else:
        w_q = _operand(w_hp, pw, spec.rotation, m, rseed, w_seed, transpose=True)
    acc, alpha = _accumulate(e_q, w_q, ref.grad_gemm_dtype(out_dtype))
    return _finish(acc, alpha, x_mask, k, recipe, seed, out_dtype)


def grad_weight(grad: list[torch.Tensor], xq: QuantizedTensor | None, x_hp, w_mask, k: int, recipe: Recipe, seed: Seed, out_dtype,
                kernel: str = "triton") -> torch.Tensor:
    """``grad``: E's column blocks [T, N_i] (one, or a fused layer's parts), read transposed: rows of E^T."""
    spec = recipe.grad_weight
    device = grad[0].device
    plans = plan_linear(recipe, kernel, device)
    pe, px = operand(plans, "grad_weight", "grad_output"), operand(plans, "grad_weight", "input")
    rseed = ref.rotation_seed(seed, "backward")
    m = prepare_rotation(spec.rotation, rseed, device)  # one draw for both operands
    # === GEMM 3: grad_weight = Q(E^T R) @ Q(X^T R)^T   [N,T] @ [T,K] -> [N,K]
    e_q = _operand(grad, pe, spec.rotation, m, rseed, sub_seed(seed, "grad_weight", "grad_output"), transpose=True)
    x_seed = sub_seed(seed, "grad_weight", "input")
    if recipe.input_for_backward is Source.QUANTIZED and xq is not None:
        x_q = _operand(xq, px, spec.rotation, m, rseed, x_seed)
    else:
        x_q = _operand(x_hp, px, spec.rotation, m, rseed, x_seed, transpose=True)
    acc, alpha = _accumulate(e_q, x_q, ref.grad_gemm_dtype(out_dtype))
    return _finish(acc, alpha, w_mask, k, recipe, seed, out_dtype)
