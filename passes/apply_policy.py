"""Pass 3: decide, per linear layer, whether its GEMMs run in FP4, and say why not when they don't.

Kept in high precision (each with its reason in ``explain()``): GEMMs that are not linear layers
(batched/attention matmuls, products of two activations), modules matching a ``skip`` glob (output
heads named ``lm_head`` by default), weights shared with an embedding (tied output heads), every GEMM
under the ``bf16`` recipe, in-features the recipe's groups cannot take (or an error, with
``bad_shapes="error"``), and backward GEMMs whose form is not recognised. Nothing is skipped silently.
"""

from __future__ import annotations

import warnings

import torch
import torch.fx as fx

from fp4compile.lowering.select import select_kernel
from fp4compile.options import BadShape
from fp4compile.passes.context import PassContext
from fp4compile.passes.site import MatmulSite, Role
from fp4compile.reference.linear import skip_reason

aten = torch.ops.aten


def _embedding_weights(gm: fx.GraphModule) -> set[str]:
    return {n.args[0].name for n in gm.graph.nodes if n.op == "call_function" and n.target == aten.embedding.default and isinstance(n.args[0], fx.Node)}


def _forward_reason(site: MatmulSite, ctx: PassContext, tied: set[str]) -> str:
    recipe = ctx.options.recipe
    if site.node.target == aten.bmm.default:
        return "batched matmul (attention-style), not a linear layer"
    if site.weight_node is None:
        return "multiplies two activations, not a linear layer"
    if not recipe.quantized:
        return f"recipe {recipe.name!r} keeps every GEMM in high precision"
    for name in (site.module, *(w.rpartition(".")[0] for w in site.weight.split("+"))):  # "+": a fused linear's weights
        reason = skip_reason(name, ctx.options.skip)
        if reason:
            return reason
    if site.weight_node.name in tied:
        return f"weight {site.weight} is shared with an embedding (tied output head)"
    k = site.node.meta["val"].shape[-1] if site.b is None else site.b.meta["val"].shape[0]
    multiple = recipe.output.inner_multiple()
    if isinstance(k, int) and k % multiple:
        message = (
            f"module {site.name!r}: in_features K={k} is not a multiple of {multiple}, which recipe {recipe.name!r} needs "
            f"for its output GEMM (groups of {multiple} along K)"
        )
        if ctx.options.bad_shapes is BadShape.ERROR:
            raise ValueError(f"{message}. Add {site.name!r} to options['skip'] or set options['bad_shapes']='skip'")
        warnings.warn(f"fp4compile: {message}; kept in high precision", stacklevel=2)
        return f"in_features K={k} is not a multiple of {multiple}"
    return ""


def apply_policy(gm: fx.GraphModule, ctx: PassContext) -> None:
    tied = _embedding_weights(gm)
    decided: dict[str, MatmulSite] = {}
    recipe = ctx.options.recipe
    for site in ctx.sites:
        if site.reason or site.quantized:
            continue
        if site.role is Role.FORWARD:
            reason = _forward_reason(site, ctx, tied)
            decided[site.key] = site
        elif site.role is Role.UNPAIRED:
            reason = "backward GEMM with no forward linear partner"
        else:
            fwd = decided.get(site.key)
            reason = fwd.reason if fwd is not None and fwd.reason else ""
            if fwd is None:
                reason = "its forward GEMM was not found"
            elif not reason and not recipe.gemm(site.role.value).quantized:
                reason = f"recipe {recipe.name!r} keeps {site.role.value} in high precision"
        site.decide(not reason, reason)
        if site.quantized:
            gemm = recipe.gemm("output" if site.role is Role.FORWARD else site.role.value)
            site.quantizers = f"{gemm.a or 'hp'} x {gemm.b or 'hp'}" + ("" if gemm.rotation.is_identity else f" ({gemm.rotation})")
            site.kernel, site.kernel_reason = select_kernel(ctx.options, site)
    for sites in ctx.linears().values():
        fwd = next((s for s in sites if s.role is Role.FORWARD), None)
        if fwd is not None and fwd.quantized and ctx.training and not any(s.role is Role.GRAD_WEIGHT for s in sites):
            fwd.notes.append("no grad_weight GEMM (frozen weight)")
        if fwd is not None and fwd.quantized and ctx.training and not any(s.role is Role.GRAD_INPUT for s in sites):
            fwd.notes.append("no grad_input GEMM (input needs no gradient)")
