"""The ``triton`` lowering of the fp4compile ops: fused rotate-quantize kernels + Hopper GEMMs.

Same contract and same arithmetic as the reference executor (``fp4compile.reference.linear``), op by op:

    quantize      X or W [R, K] along K: one kernel pass (rotation, scales, rounding, mask, packing)
    output_gemm   MXFP4 x MXFP4: folded FP8 values + row scales -> row-wise scaled FP8 GEMM (cuBLAS);
                  NVFP4: exact BF16 values -> BF16 GEMM; then alpha (tensor scales, 16/9)
    grad_input    E [T, N] along N (kernel), W^T re-quantized from the packed forward W (kernel reads the
                  packed tensor transposed) or from the high-precision W, GEMM, mask, inverse rotation
    grad_weight   E^T along T and X^T along T, both read transposed by the kernel; GEMM; mask; rotation

Differences from the reference, by design: stochastic rounding draws counter-based uniforms in the kernel
(statistically equivalent, not the reference's bits), and the FP8 GEMM accumulates at the tensor cores'
precision (about 1e-4 relative, hopper.md). A quantizer without a kernel rule (a plug-in, or
``nvfp4_rtn_16x16``) runs through the reference for that operand.
"""

from __future__ import annotations

import torch

from fp4compile import formats
from fp4compile.config import Recipe, Source
from fp4compile.kernels.epilogue import mask_rotate_cast
from fp4compile.kernels.quantize import quantize as kernel_quantize
from fp4compile.kernels.quantize import supports
from fp4compile.lowering.hopper_gemm import block_values_bf16, gemm_nt
from fp4compile.quantized import QuantizedTensor
from fp4compile.quantizers import get_quantizer
from fp4compile.reference import linear as ref
from fp4compile.reference.gemm import Operand
from fp4compile.rotations import Rotation
from fp4compile.seeds import derive_seed


def _matrix(rotation: Rotation, seed: int, device) -> torch.Tensor | None:
    return None if rotation.is_identity else rotation.matrix(seed, "cpu").to(device)


def _quantize(src, quantizer: str | None, rotation: Rotation, rot_seed: int, seed: int, *, transpose: bool = False, pad_to: int = 1) -> tuple[Operand, torch.Tensor | None]:
    """Quantize ``src`` (dense, or packed read transposed) along its (transposed) last axis.

    Falls back to the reference composition for quantizers without a kernel rule and for operands
    left in high precision (``quantizer is None``).
    """
    q = None if quantizer is None else get_quantizer(quantizer)
    if q is not None and supports(q):
        device = src.codes.device if isinstance(src, QuantizedTensor) else src.device
        return kernel_quantize(src, q, _matrix(rotation, rot_seed, device), seed, transpose=transpose, pad_to=pad_to)
    dense = src.dequantize().t() if isinstance(src, QuantizedTensor) else (src.t() if transpose else src)
    pad = (-dense.shape[-1]) % pad_to
    dense = torch.nn.functional.pad(dense.float(), (0, pad)) if pad else dense.float()
    rotated = rotation.apply(dense, rot_seed)
    if q is None:
        return rotated, None
    out = q.quantize(rotated, seed)
    return out, (formats.pack_bits(out.mask) if out.mask is not None else None)


def quantize(t: torch.Tensor, recipe: Recipe, operand: str, seed: int):
    spec = recipe.output
    name = spec.a if operand == "input" else spec.b
    q, mask = _quantize(t, name, spec.rotation, ref.rotation_seed(seed, "output"), derive_seed(seed, "output", operand))
    if mask is None:
        mask = torch.empty(0, dtype=torch.uint8, device=t.device)
    return q.codes, q.scales, q.tensor_scale.reshape(()).float(), mask


def output_gemm(xq: QuantizedTensor, wq: QuantizedTensor, out_dtype: torch.dtype) -> torch.Tensor:
    # === GEMM 1: y = Xq @ Wq^T   [T,K] @ [K,N] -> [T,N]
    return gemm_nt(xq, wq, out_dtype)


def _finish(g: torch.Tensor, mask_bits: torch.Tensor | None, k: int, recipe: Recipe, seed: int, out_dtype: torch.dtype) -> torch.Tensor:
    """Trust mask, inverse forward rotation and cast, fused in one kernel pass (kernels/epilogue.py)."""
    g = g[..., :k]
    mask = mask_bits if mask_bits is not None and recipe.mask_gradients else None
    rotation = recipe.output.rotation
    if mask is None and rotation.is_identity:
        return g.to(out_dtype)
    inverse = None if rotation.is_identity else rotation.matrix(ref.rotation_seed(seed, "output"), "cpu").t().to(g.device)
    return mask_rotate_cast(g, mask, inverse, out_dtype)


def grad_input(grad, wq: QuantizedTensor | None, w_hp, x_mask, k: int, recipe: Recipe, seed: int, out_dtype) -> torch.Tensor:
    spec = recipe.grad_input
    multiple = spec.inner_multiple()
    rseed = ref.rotation_seed(seed, "backward")
    # === GEMM 2: grad_input = Q(E R) @ Q(W^T R)^T   [T,N] @ [N,K] -> [T,K]
    e_q, _ = _quantize(grad, spec.a, spec.rotation, rseed, derive_seed(seed, "grad_input", "grad_output"), pad_to=multiple)
    if recipe.weight_for_backward is Source.QUANTIZED and wq is not None and spec.b is None and spec.rotation.is_identity:
        # the forward Wq reused as is (NVIDIA's recipe): its exact BF16 block values, transposed, and its alpha
        w_t = block_values_bf16(wq).t()  # [K, N]
        pad = (-w_t.shape[1]) % multiple
        w_t = torch.nn.functional.pad(w_t, (0, pad)) if pad else w_t
        return _finish(gemm_nt(e_q, w_t, torch.float32) * wq.alpha, x_mask, k, recipe, seed, out_dtype)
    if recipe.weight_for_backward is Source.QUANTIZED and wq is not None:
        w_src = wq  # packed [N, K], read transposed as W^T [K, N]
        w_q, _ = _quantize(w_src, spec.b, spec.rotation, rseed, derive_seed(seed, "grad_input", "weight"), pad_to=multiple)
    else:
        w_q, _ = _quantize(w_hp, spec.b, spec.rotation, rseed, derive_seed(seed, "grad_input", "weight"), transpose=True, pad_to=multiple)
    return _finish(gemm_nt(e_q, w_q, torch.float32), x_mask, k, recipe, seed, out_dtype)





def grad_weight(grad, xq: QuantizedTensor | None, x_hp, w_mask, k: int, recipe: Recipe, seed: int, out_dtype) -> torch.Tensor:
    spec = recipe.grad_weight
    multiple = spec.inner_multiple()
    rseed = ref.rotation_seed(seed, "backward")
    # === GEMM 3: grad_weight = Q(E^T R) @ Q(X^T R)^T   [N,T] @ [T,K] -> [N,K]
    e_q, _ = _quantize(grad, spec.a, spec.rotation, rseed, derive_seed(seed, "grad_weight", "grad_output"), transpose=True, pad_to=multiple)
    if recipe.input_for_backward is Source.QUANTIZED and xq is not None:
        x_q, _ = _quantize(xq, spec.b, spec.rotation, rseed, derive_seed(seed, "grad_weight", "input"), pad_to=multiple)
    else:
        x_q, _ = _quantize(x_hp, spec.b, spec.rotation, rseed, derive_seed(seed, "grad_weight", "input"), transpose=True, pad_to=multiple)
    return _finish(gemm_nt(e_q, x_q, torch.float32), w_mask, k, recipe, seed, out_dtype)
