"""Pass 1: find every GEMM of the graph (``mm``, ``addmm``, ``bmm``) and name its module.

Module names come from ``nn_module_stack`` (forward) or ``fwd_nn_module_stack`` (backward), written
by Dynamo as ``L['self'].layers.0.fc1``; we strip the ``L['...']`` prefix to get the
``named_modules()`` name. GEMMs already decided in an earlier run of the pipeline are not found
again, which keeps the pipeline idempotent.
"""

from __future__ import annotations

import re

import torch
import torch.fx as fx

from fp4compile.passes.context import PassContext
from fp4compile.passes.site import MatmulSite, Role

aten = torch.ops.aten
GEMMS = {aten.mm.default, aten.addmm.default, aten.bmm.default}
_PREFIX = re.compile(r"^L\['[^']*'\]\.?")


def module_name(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or node.meta.get("fwd_nn_module_stack") or {}
    if not stack:
        return ""
    qualname = list(stack.values())[-1][0]
    return _PREFIX.sub("", qualname)


def find_matmuls(gm: fx.GraphModule, ctx: PassContext) -> None:
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in GEMMS or node.meta.get("fp4compile_seen"):
            continue
        node.meta["fp4compile_seen"] = True
        backward = node.meta.get("partitioner_tag") == "is_backward" or node.meta.get("autograd_backward", False)
        seq_nr = node.meta.get("seq_nr")
        val = node.meta.get("val")
        ctx.sites.append(
            MatmulSite(
                node=node,
                role=Role.BACKWARD if backward else Role.FORWARD,
                module=module_name(node),
                seq_nr=seq_nr if isinstance(seq_nr, int) and seq_nr >= 0 else None,
                shape=tuple(val.shape) if isinstance(val, torch.Tensor) else (),
            )
        )
