"""Pass 4: plan, per quantized linear, the form each operand's quantize kernel writes (lowering/layout_plan.py).

The forward quantizations get their decision as the ``form`` argument of their ``fp4compile::quantize`` op
(``rewrite_linears`` reads ``site.layout``); the backward ops follow the same plan when they run. Every
site of a linear carries the plan, so ``explain()`` shows it. Idempotent: it recomputes the same plan.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from fp4compile.lowering.layout_plan import plan_linear
from fp4compile.passes.context import PassContext
from fp4compile.passes.site import Role


def plan_layouts(gm: fx.GraphModule, ctx: PassContext) -> None:
    for sites in ctx.linears().values():
        fwd = next((s for s in sites if s.role is Role.FORWARD), None)
        if fwd is None or not fwd.quantized:
            continue
        val = fwd.node.meta.get("val")
        device = val.device if isinstance(val, torch.Tensor) else torch.device("cpu")
        roles = {s.role for s in sites if s.quantized}
        plan = plan_linear(ctx.options.recipe, fwd.kernel, device,
                           needs_x=Role.GRAD_WEIGHT in roles or not ctx.training, needs_w=Role.GRAD_INPUT in roles or not ctx.training)
        for site in sites:
            if site.quantized:
                gemm = "output" if site.role is Role.FORWARD else site.role.value
                site.layout = tuple(p for p in plan if p.gemm == gemm)
