"""Pass 2: pair the GEMMs of each linear layer and give each its role.

A forward GEMM is a linear layer's when one operand reaches a parameter placeholder through views and
transposes (``addmm(bias, x2d, permute(W))``). Backward GEMMs with the same ``seq_nr`` are its
gradients: the one that reads the forward's activation operand is grad_weight
(``mm(permute(E), x2d)``), the other grad_input (``mm(E, W)``). Versions without ``seq_nr`` fall back to
pairing by module name. Each linear gets a unique ``key`` (its module name, ``#k`` for repeated calls),
the name its seeds are derived from.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from fp4compile.passes.context import PassContext
from fp4compile.passes.site import MatmulSite, Role

aten = torch.ops.aten
_THROUGH = {
    aten.permute.default, aten.t.default, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
    aten.clone.default, aten.expand.default, aten.alias.default, aten.detach.default,
    torch.ops.prims.convert_element_type.default, aten._to_copy.default,
}


def source(node: fx.Node) -> fx.Node:
    """Follow views, transposes, copies and casts back to the producing node."""
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in _THROUGH:
        node = node.args[0]
    return node


def _fused_weight(node: fx.Node, ctx: PassContext) -> list[str] | None:
    """The parameter FQNs of a fused linear's weight ``cat([W_1, ..., W_n])`` along dim 0, or None."""
    if node.op != "call_function" or node.target != aten.cat.default or (len(node.args) > 1 and node.args[1] != 0):
        return None
    parts = [source(p) for p in node.args[0]]
    if not all(isinstance(p, fx.Node) and p.op == "placeholder" and p.name in ctx.param_names for p in parts):
        return None
    return [ctx.param_names[p.name] for p in parts]


def _operands(node: fx.Node) -> tuple[fx.Node | None, fx.Node, fx.Node]:
    if node.target == aten.addmm.default:
        return node.args[0], node.args[1], node.args[2]
    return None, node.args[0], node.args[1]


def assign_roles(gm: fx.GraphModule, ctx: PassContext) -> None:
    forwards: dict[object, MatmulSite] = {}
    occurrences: dict[str, int] = {}
    for site in ctx.sites:
        if site.role is not Role.FORWARD or site.key:
            continue
        bias, a, b = _operands(site.node)
        site.bias, site.a, site.b = bias, a, b
        if site.node.target != aten.bmm.default:
            src = source(b)
            if src.op == "placeholder" and src.name in ctx.param_names:
                site.weight_node, site.weight = src, ctx.param_names[src.name]
            elif (names := _fused_weight(src, ctx)) is not None:  # linears fused before autograd (passes/fuse_linears.py)
                site.weight_node, site.weight = src, "+".join(names)
        base = site.module or (site.weight.rpartition(".")[0] if site.weight else "") or f"<gemm:{site.node.name}>"
        k = occurrences.get(base, 0)
        occurrences[base] = k + 1
        site.key = base if k == 0 else f"{base}#{k}"
        forwards[site.seq_nr if site.seq_nr is not None else ("module", site.module)] = site
    for site in ctx.sites:
        if site.role is not Role.BACKWARD:
            continue
        fwd = forwards.get(site.seq_nr if site.seq_nr is not None else ("module", site.module))
        if fwd is None:
            site.role = Role.UNPAIRED
            site.key = site.key or f"<gemm:{site.node.name}>"
            continue
        site.key, site.a, site.b, site.weight, site.weight_node = fwd.key, fwd.a, fwd.b, fwd.weight, fwd.weight_node
        reads_activation = any(source(arg) is source(fwd.a) for arg in site.node.args[:2])
        site.role = Role.GRAD_WEIGHT if reads_activation else Role.GRAD_INPUT
