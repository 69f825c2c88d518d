"""The ``torch.library`` ops the passes insert into graphs (namespace ``fp4compile``).

Per quantized linear layer ``y = x W^T`` (x ``[T, K]``, W ``[N, K]``, E = dL/dy ``[T, N]``):

* ``step_seed(anchor, base_seed, site, state) -> int64 scalar on anchor's device``: the seed of this call
  of this layer, ``seeds.step_seed(base_seed, site, step)``, where ``step`` counts the calls of the compiled
  graph in a counter on the device (no host sync; CUDA-graph replays count too). It has a side effect
  (the count), so every call site gets its own ``site`` key (identical calls would be merged by
  common-subexpression elimination).
* ``quantize(t, recipe, operand, seed, fallback_seed, kernel, form) -> (codes, scales, tensor_scale, mask,
  values, row_scale)``: the output GEMM's rotation and quantizer for ``operand`` ("input" or "weight"),
  along the last dim. ``mask`` is the trust mask packed one bit per element, or an empty tensor. ``form``
  is the layout plan's decision (lowering/layout_plan.py): ``"packed"`` leaves ``values`` and ``row_scale``
  empty; ``"fp8"`` / ``"bf16"`` also return the GEMM-ready values ``[R, K]`` (and FP32 row scales
  ``[R, 1]`` for FP8) from the same kernel launch, while the packed outputs are what the backward saves;
  ``"fp4"`` (the ``blackwell`` target) returns as ``values`` the scale bytes again in the 128x4 blocked layout
  (uint8, flat), which with the packed codes are the native FP4 GEMM's operand.
* ``output_gemm(x codes/scales/tensor_scale, w codes/scales/tensor_scale, recipe, out_dtype, kernel,
  x values/row_scale, w values/row_scale)``: ``y = Xq @ Wq^T`` ``[T, N]``, from the values when given.
* ``grad_input([E], W codes/scales/tensor_scale?, W?, x_mask?, recipe, seed, out_dtype, kernel)``: ``[T, K]``.
* ``grad_weight([E], X codes/scales/tensor_scale?, X?, w_mask?, recipe, seed, out_dtype, kernel)``: ``[N, K]``.

  ``E`` comes as a list of column blocks ``[T, N_i]`` whose concatenation it is: one block, or a fused layer's
  parts' gradients (passes/rewrite_linears.py), which the kernels quantize in place, so that the backward never
  writes the concatenated gradient (the reference concatenates them).

The quantized operands are separate tensors so that the partitioner saves FP4 codes and scales for the
backward instead of the high-precision activations. ``kernel`` is the lowering decision recorded per
op; every op runs the reference (``fp4compile.reference.linear``) on the ``reference`` target.
"""

from __future__ import annotations

import math

import torch

from fp4compile import formats, persistent
from fp4compile.config import Recipe, get_recipe
from fp4compile.quantized import GemmValues, QuantizedTensor
from fp4compile.quantizers import get_quantizer
from fp4compile.reference import linear as ref
from fp4compile.seeds import STEP_STRIDE, DeviceSeed, Seed, step_key, sub_seed

Tensor = torch.Tensor


def _host_seed(seed: Tensor | None, fallback: int) -> int:
    """The reference's int seed (reads a device seed back: a host sync the reference may take)."""
    return fallback if seed is None else int(seed.item())


def _kernel_seed(seed: Tensor | None, fallback: int) -> Seed:
    """The lowered kernels' seed: the step's device seed as is (no sync), or the host fallback."""
    return fallback if seed is None else DeviceSeed(seed)


def _lowered(kernel: str):
    """The module implementing ``kernel`` (None for the reference, which is written inline below)."""
    if kernel == "reference":
        return None
    if kernel in ("triton", "blackwell"):  # blackwell: the same ops, with the native FP4 GEMM where the layout plan says fp4
        from fp4compile.lowering import triton_ops

        return triton_ops
    raise NotImplementedError(f"fp4compile: kernel target {kernel!r} has no implementation of the ops in this version; use kernels='auto'")


def _unflatten(recipe: Recipe, quantizer: str | None, codes: Tensor | None, scales: Tensor | None, tscale: Tensor | None, mask: Tensor | None = None):
    if quantizer is None or codes is None:
        return None
    q = get_quantizer(quantizer)
    return QuantizedTensor(codes, scales, q.scale_format, q.group_size, tscale, q.factor, None if mask is None else formats.unpack_bits(mask))


# --------------------------------------------------------------------------------------------
# step_seed
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("fp4compile::step_seed", mutates_args=())
def step_seed(anchor: Tensor, base_seed: int, site: str, state: int) -> Tensor:
    # seed = key(base_seed, site) + step * STRIDE, formed from a counter on anchor's device (no host
    # sync; a CUDA graph replay increments the counter too, so every replay draws fresh randomness)
    counter = _counter(state, site, anchor.device)
    seed = counter * STEP_STRIDE + step_key(base_seed, site)
    counter.add_(1)
    return seed.reshape(())


@step_seed.register_fake
def _(anchor, base_seed, site, state):
    return torch.empty((), dtype=torch.int64, device=anchor.device)


def _counter(state: int, site: str, device: torch.device) -> Tensor:
    """The step counter of one call site of one compiled graph (int64 [1] on ``device``)."""
    return persistent.cached(("step counter", state, site), device, lambda: torch.zeros(1, dtype=torch.int64, device=device))


# --------------------------------------------------------------------------------------------
# quantize (forward operands of the output GEMM)
# --------------------------------------------------------------------------------------------


_VALUE_DTYPES = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16, "fp4": torch.uint8}


def _check_form(form: str) -> None:
    if form != "packed" and form not in _VALUE_DTYPES:
        raise ValueError(f"fp4compile::quantize: form must be 'packed', 'fp8', 'bf16' or 'fp4', got {form!r}")


@torch.library.custom_op("fp4compile::quantize", mutates_args=())
def quantize(
    t: Tensor, recipe: str, operand: str, seed: Tensor | None, fallback_seed: int, kernel: str, form: str = "packed"
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_form(form)
    r = get_recipe(recipe)
    if (impl := _lowered(kernel)) is not None:
        return impl.quantize(t, r, operand, _kernel_seed(seed, fallback_seed), form)
    s = _host_seed(seed, fallback_seed)
    if form != "packed":
        raise ValueError(f"fp4compile::quantize: the reference lowering writes the packed form only, not {form!r}")
    rot = r.output.rotation
    name = r.output.a if operand == "input" else r.output.b
    q = get_quantizer(name).quantize(rot.apply(t, ref.rotation_seed(s, "output")), sub_seed(s, "output", operand))
    empty = torch.empty(0, dtype=torch.uint8, device=t.device)
    mask = formats.pack_bits(q.mask) if q.mask is not None else empty
    return q.codes, q.scales, q.tensor_scale.reshape(()).float(), mask, empty.clone(), empty.clone()


@quantize.register_fake
def _(t, recipe, operand, seed, fallback_seed, kernel, form="packed"):
    _check_form(form)
    r = get_recipe(recipe)
    q = get_quantizer(r.output.a if operand == "input" else r.output.b)
    rows, k = t.shape[:-1], t.shape[-1]
    codes = t.new_empty((*rows, k // 2), dtype=torch.uint8)
    scales = t.new_empty((*rows, k // q.group_size), dtype=torch.uint8)
    tscale = t.new_empty((), dtype=torch.float32)
    mask = t.new_empty((*rows, k // 8), dtype=torch.uint8) if q.has_mask else t.new_empty((0,), dtype=torch.uint8)
    if form == "packed":
        return codes, scales, tscale, mask, t.new_empty((0,), dtype=torch.uint8), t.new_empty((0,), dtype=torch.uint8)
    if form == "fp4":  # the scale bytes in the 128x4 blocked layout: round_up(R, 128) * round_up(K/g, 4), flat
        rows_p, cols_p = formats.blocked_shape(math.prod(rows), k // q.group_size)
        return codes, scales, tscale, mask, t.new_empty((rows_p * cols_p,), dtype=torch.uint8), t.new_empty((0,), dtype=torch.uint8)
    values = t.new_empty((*rows, k), dtype=_VALUE_DTYPES[form])
    row_scale = t.new_empty((*rows, 1), dtype=torch.float32) if form == "fp8" else t.new_empty((0,), dtype=torch.uint8)
    return codes, scales, tscale, mask, values, row_scale


# --------------------------------------------------------------------------------------------
# output GEMM
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("fp4compile::output_gemm", mutates_args=())
def output_gemm(
    x_codes: Tensor, x_scales: Tensor, x_tscale: Tensor, w_codes: Tensor, w_scales: Tensor, w_tscale: Tensor, recipe: str, out_dtype: torch.dtype, kernel: str,
    x_values: Tensor | None = None, x_row_scale: Tensor | None = None, w_values: Tensor | None = None, w_row_scale: Tensor | None = None,
) -> Tensor:
    r = get_recipe(recipe)
    xq = _unflatten(r, r.output.a, x_codes, x_scales, x_tscale)
    wq = _unflatten(r, r.output.b, w_codes, w_scales, w_tscale)
    if (impl := _lowered(kernel)) is not None:
        if x_values is not None and w_values is not None:
            xq, wq = _values(xq, x_values, x_row_scale), _values(wq, w_values, w_row_scale)
        return impl.output_gemm(xq, wq, out_dtype)
    return ref.output_gemm(xq, wq, out_dtype)  # [T, K] @ [K, N] -> [T, N]


def _values(q: QuantizedTensor, values: Tensor, row_scale: Tensor | None):
    """The GEMM-ready operand: FP8 / BF16 values (GemmValues), or the codes with blocked scale bytes (uint8: form fp4)."""
    if values.dtype == torch.uint8:
        from fp4compile.lowering.blackwell import fp4_operand

        return fp4_operand(q.codes, values, q.scale_format, q.alpha)
    return GemmValues(values, row_scale if row_scale is not None and row_scale.dtype == torch.float32 else None, q.alpha)


@output_gemm.register_fake
def _(x_codes, x_scales, x_tscale, w_codes, w_scales, w_tscale, recipe, out_dtype, kernel, x_values=None, x_row_scale=None, w_values=None, w_row_scale=None):
    return x_codes.new_empty((x_codes.shape[0], w_codes.shape[0]), dtype=out_dtype)


# --------------------------------------------------------------------------------------------
# backward GEMMs
# --------------------------------------------------------------------------------------------


def _check_blocks(grad: list[Tensor], op: str) -> None:
    if not grad or any(g.dim() != 2 or g.shape[0] != grad[0].shape[0] for g in grad):
        raise ValueError(f"fp4compile::{op}: grad must be a non-empty list of 2-D column blocks [T, N_i] of E with one T, "
                         f"got shapes {[tuple(g.shape) for g in grad]}")


@torch.library.custom_op("fp4compile::grad_input", mutates_args=())
def grad_input(
    grad: list[Tensor],
    w_codes: Tensor | None,
    w_scales: Tensor | None,
    w_tscale: Tensor | None,
    w_hp: Tensor | None,
    x_mask: Tensor | None,
    k: int,
    recipe: str,
    seed: Tensor,
    out_dtype: torch.dtype,
    kernel: str,
) -> Tensor:
    _check_blocks(grad, "grad_input")
    r = get_recipe(recipe)
    wq = _unflatten(r, r.output.b, w_codes, w_scales, w_tscale)
    if (impl := _lowered(kernel)) is not None:
        return impl.grad_input(grad, wq, w_hp, x_mask, k, r, DeviceSeed(seed), out_dtype, kernel)
    mask = None if x_mask is None else formats.unpack_bits(x_mask)
    # === GEMM 2: grad_input = E @ W   [T,N] @ [N,K] -> [T,K]
    return ref.grad_input(ref.whole_gradient(grad), wq, w_hp, mask, r, _host_seed(seed, 0), out_dtype)


@grad_input.register_fake
def _(grad, w_codes, w_scales, w_tscale, w_hp, x_mask, k, recipe, seed, out_dtype, kernel):
    _check_blocks(grad, "grad_input")
    return grad[0].new_empty((grad[0].shape[0], k), dtype=out_dtype)


@torch.library.custom_op("fp4compile::grad_weight", mutates_args=())
def grad_weight(
    grad: list[Tensor],
    x_codes: Tensor | None,
    x_scales: Tensor | None,
    x_tscale: Tensor | None,
    x_hp: Tensor | None,
    w_mask: Tensor | None,
    k: int,
    recipe: str,
    seed: Tensor,
    out_dtype: torch.dtype,
    kernel: str,
) -> Tensor:
    _check_blocks(grad, "grad_weight")
    r = get_recipe(recipe)
    xq = _unflatten(r, r.output.a, x_codes, x_scales, x_tscale)
    if (impl := _lowered(kernel)) is not None:
        return impl.grad_weight(grad, xq, x_hp, w_mask, k, r, DeviceSeed(seed), out_dtype, kernel)
    mask = None if w_mask is None else formats.unpack_bits(w_mask)
    # === GEMM 3: grad_weight = E^T @ X   [N,T] @ [T,K] -> [N,K]
    return ref.grad_weight(ref.whole_gradient(grad), xq, x_hp, mask, r, _host_seed(seed, 0), out_dtype)


@grad_weight.register_fake
def _(grad, x_codes, x_scales, x_tscale, x_hp, w_mask, k, recipe, seed, out_dtype, kernel):
    _check_blocks(grad, "grad_weight")
    return grad[0].new_empty((sum(g.shape[1] for g in grad), k), dtype=out_dtype)
