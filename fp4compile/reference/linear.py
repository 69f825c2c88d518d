"""The eager reference linear layer: a recipe's three GEMMs composed from the reference quantizers.

This is the oracle the compiler must match, and a user's fallback when ``torch.compile`` is not an
option. The functions below are also what the compiled graph's ops run on the reference lowering,
so "compiled == eager" holds by construction up to the order of FP32 summation.

Shapes (2-D, tokens flattened): x ``[T, K]``, W ``[N, K]``, E = dL/dy ``[T, N]``.

    # === GEMM 1: output      = Q(X R_f) @ Q(W R_f)^T                   [T,K]@[K,N] -> [T,N]
    # === GEMM 2: grad_input  = (Q(E R) @ Q(W_b^T R)^T * M_x) R_f^T       [T,N]@[N,K] -> [T,K]
    # === GEMM 3: grad_weight = (Q(E^T R) @ Q(X_b^T R)^T * M_w) R_f^T     [N,T]@[T,K] -> [N,K]

GEMMs 2 and 3 hold their result in BF16 before the mask and R_f^T when the gradient is BF16 (``grad_gemm_dtype``).

R_f is the output GEMM's rotation along K; R the backward rotation (one draw per layer per step,
shared by the four backward operands); W_b and X_b are the forward-quantized tensors (dequantized,
still in the R_f domain) or the high-precision ones, as the recipe says; M the trust masks. The inner
dimensions of GEMMs 2 and 3 (N and T) are zero-padded up to the groups' multiple, which is exact.

Seeds: every call gets a ``seed`` (the backend derives it from its base seed, the module name and
the step); each random draw below derives its own seed from it by name.
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from fp4compile.config import Recipe, Source, get_recipe
from fp4compile.quantized import QuantizedTensor
from fp4compile.quantizers import get_quantizer
from fp4compile.reference.gemm import Operand, gemm_nt
from fp4compile.seeds import step_seed, sub_seed


def _quantize(t: torch.Tensor, quantizer: str | None, seed: int, *names: str) -> Operand:
    if quantizer is None:
        return t.float()
    return get_quantizer(quantizer).quantize(t, sub_seed(seed, *names))


def rotation_seed(seed, gemm: str):
    """The seed of one GEMM's rotation signs (an int, or a DeviceSeed in the Triton lowering)."""
    return sub_seed(seed, "rotation", gemm)


def whole_gradient(blocks: list[torch.Tensor]) -> torch.Tensor:
    """E [T, N] from its column blocks [T, N_i] (the backward ops' ``grad``): the one block as it is, else their concatenation."""
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)


def check_shapes(recipe: Recipe, k: int) -> None:
    """Raise if the in-features K cannot take the output GEMM's groups and rotation.

    The backward GEMMs' inner dimensions (N for grad_input, T for grad_weight) are zero-padded as
    needed, which is exact; K is the forward GEMM's inner dimension and must fit.
    """
    multiple = recipe.output.inner_multiple()
    if recipe.output.quantized and k % multiple:
        raise ValueError(
            f"recipe {recipe.name!r} quantizes the output GEMM along in_features in groups of {multiple}, "
            f"but in_features is {k}: keep this layer in high precision (skip it) or pad it to a multiple of {multiple}"
        )


def _pad_inner(a: torch.Tensor, b: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad the shared last (inner) dimension of a and b to a multiple: a @ b^T is unchanged."""
    pad = (-a.shape[-1]) % multiple
    if pad:
        a, b = F.pad(a, (0, pad)), F.pad(b, (0, pad))
    return a, b


def forward_operands(x: torch.Tensor, w: torch.Tensor, recipe: Recipe, seed: int) -> tuple[Operand, Operand]:
    """The output GEMM's operands: X [T,K] and W [N,K], rotated along K and quantized."""
    rot, rseed = recipe.output.rotation, rotation_seed(seed, "output")
    xq = _quantize(rot.apply(x, rseed), recipe.output.a, seed, "output", "input")
    wq = _quantize(rot.apply(w, rseed), recipe.output.b, seed, "output", "weight")
    return xq, wq


def output_gemm(xq: Operand, wq: Operand, out_dtype: torch.dtype) -> torch.Tensor:
    # === GEMM 1: y = Xq @ Wq^T   [T,K] @ [K,N] -> [T,N]
    return gemm_nt(xq, wq, out_dtype)


def _backward_source(fwd: QuantizedTensor | None, hp: torch.Tensor | None, source: Source, recipe: Recipe, seed: int, what: str) -> torch.Tensor:
    """W or X as the backward GEMMs read it (float32), in the output rotation's domain."""
    if source is Source.QUANTIZED and fwd is not None:
        return fwd.dequantize()
    if hp is None:
        raise ValueError(f"recipe {recipe.name!r}: the backward needs the high-precision {what}, which was not saved")
    return recipe.output.rotation.apply(hp, rotation_seed(seed, "output"))


def grad_gemm_dtype(out_dtype: torch.dtype) -> torch.dtype:
    """The dtype in which a backward GEMM's result is held before the mask and the inverse forward rotation.

    BF16 when the gradient is BF16: one rounding more than the math needs (in the rotated basis; ~2^-9 relative,
    against FP4's ~2^-3 on the operands), for half the bytes the GPU's GEMM writes and its epilogue reads
    (the largest tensors of the backward, [T, K]). FP32 otherwise.
    """
    return torch.bfloat16 if out_dtype == torch.bfloat16 else torch.float32


def _finish_grad(g: torch.Tensor, mask: torch.Tensor | None, recipe: Recipe, seed: int, out_dtype: torch.dtype) -> torch.Tensor:
    g = g.float()
    if mask is not None and recipe.mask_gradients:
        g = g * mask  # straight-through estimator with clipping, in the rotated domain
    return recipe.output.rotation.undo(g, rotation_seed(seed, "output")).to(out_dtype)


def grad_input(
    grad: torch.Tensor,
    w_fwd: QuantizedTensor | None,
    w_hp: torch.Tensor | None,
    x_mask: torch.Tensor | None,
    recipe: Recipe,
    seed: int,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """dX = E @ W  ([T,N] @ [N,K] -> [T,K]) under the recipe's grad_input GEMM."""
    spec = recipe.grad_input
    w_src = _backward_source(w_fwd, w_hp, recipe.weight_for_backward, recipe, seed, "weight")  # [N, K]
    e, w_t = _pad_inner(grad.float(), w_src.t(), spec.inner_multiple())  # [T, N'], [K, N']
    rot, rseed = spec.rotation, rotation_seed(seed, "backward")
    # === GEMM 2: grad_input = Q(E R) @ Q(W^T R)^T   [T,N] @ [N,K] -> [T,K]
    e_q = _quantize(rot.apply(e, rseed), spec.a, seed, "grad_input", "grad_output")
    w_q = _quantize(rot.apply(w_t, rseed), spec.b, seed, "grad_input", "weight")
    return _finish_grad(gemm_nt(e_q, w_q, grad_gemm_dtype(out_dtype)), x_mask, recipe, seed, out_dtype)


def grad_weight(
    grad: torch.Tensor,
    x_fwd: QuantizedTensor | None,
    x_hp: torch.Tensor | None,
    w_mask: torch.Tensor | None,
    recipe: Recipe,
    seed: int,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """dW = E^T @ X  ([N,T] @ [T,K] -> [N,K]) under the recipe's grad_weight GEMM."""
    spec = recipe.grad_weight
    x_src = _backward_source(x_fwd, x_hp, recipe.input_for_backward, recipe, seed, "input")  # [T, K]
    e_t, x_t = _pad_inner(grad.float().t(), x_src.t(), spec.inner_multiple())  # [N, T'], [K, T']
    rot, rseed = spec.rotation, rotation_seed(seed, "backward")
    # === GEMM 3: grad_weight = Q(E^T R) @ Q(X^T R)^T   [N,T] @ [T,K] -> [N,K]
    e_q = _quantize(rot.apply(e_t, rseed), spec.a, seed, "grad_weight", "grad_output")
    x_q = _quantize(rot.apply(x_t, rseed), spec.b, seed, "grad_weight", "input")
    return _finish_grad(gemm_nt(e_q, x_q, grad_gemm_dtype(out_dtype)), w_mask, recipe, seed, out_dtype)


class _ReferenceLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, recipe: Recipe, seed: int):
        k = x.shape[-1]
        x2d = x.reshape(-1, k)
        xq, wq = forward_operands(x2d, weight, recipe, seed)
        y = output_gemm(xq, wq, x.dtype)
        if bias is not None:
            y = y + bias
        ctx.recipe, ctx.seed, ctx.x_shape, ctx.has_bias = recipe, seed, x.shape, bias is not None
        ctx.xq = xq if isinstance(xq, QuantizedTensor) else None
        ctx.wq = wq if isinstance(wq, QuantizedTensor) else None
        ctx.save_for_backward(x2d, weight)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_y):
        x2d, weight = ctx.saved_tensors
        recipe, seed = ctx.recipe, ctx.seed
        grad = grad_y.reshape(-1, weight.shape[0])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            x_mask = ctx.xq.mask if ctx.xq is not None else None
            dx = grad_input(grad, ctx.wq, weight, x_mask, recipe, seed, x2d.dtype).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            w_mask = ctx.wq.mask if ctx.wq is not None else None
            dw = grad_weight(grad, ctx.xq, x2d, w_mask, recipe, seed, weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad.sum(0).to(grad_y.dtype)
        return dx, dw, db, None, None


def reference_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, recipe: str | Recipe, seed: int) -> torch.Tensor:
    """``F.linear`` under ``recipe`` with the reference quantizers and GEMMs (autograd included)."""
    recipe = get_recipe(recipe)
    if not recipe.quantized:
        return F.linear(x, weight, bias)
    check_shapes(recipe, weight.shape[1])
    return _ReferenceLinearFn.apply(x, weight, bias, recipe, seed)


class ReferenceLinear(nn.Linear):
    """An ``nn.Linear`` that runs a recipe through the reference; shares the original's parameters.

    Each forward call with gradients enabled is one step: its seed is
    ``step_seed(seed, name, step)``, so the backward rotations and stochastic rounding are fresh every
    step and reproducible for a given ``seed``.
    """

    def __init__(self, linear: nn.Linear, recipe: str | Recipe, seed: int, name: str):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.recipe, self.seed, self.name, self.step = get_recipe(recipe), seed, name, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            seed = step_seed(self.seed, self.name, self.step)
            self.step += 1
        else:
            seed = step_seed(self.seed, self.name, -1)
        return reference_linear(x, self.weight, self.bias, self.recipe, seed)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recipe={self.recipe.name}"


DEFAULT_SKIP = ("lm_head", "*.lm_head")


def _embedding_weights(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def skip_reason(name: str, skip: tuple[str, ...] | list[str]) -> str | None:
    for pattern in skip:
        if fnmatch.fnmatchcase(name, pattern):
            return f"matches skip pattern {pattern!r}"
    return None


def quantize_linears(model: nn.Module, recipe: str | Recipe = "quartet", seed: int = 0, skip=DEFAULT_SKIP) -> nn.Module:
    """Swap every ``nn.Linear`` of ``model`` (in place) for a :class:`ReferenceLinear` under ``recipe``.

    Linears matching a ``skip`` glob (default: output heads named ``lm_head``) and linears whose
    weight is an embedding's (tied heads) stay as they are. Returns the model.
    """
    recipe = get_recipe(recipe)
    tied = _embedding_weights(model)
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or skip_reason(name, skip) or id(module.weight) in tied:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ReferenceLinear(module, recipe, seed, name))
    return model
