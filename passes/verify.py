"""Pass 6: check the invariants the rest of the compiler relies on (always cheap, run every time).

* the graph lints (well-formed, topologically ordered);
* every node the pipeline inserted has ``meta["val"]``;
* no GEMM decided "quantized" is left in the graph, and no fp4compile op mutates its inputs.
"""

from __future__ import annotations

import torch.fx as fx

from fp4compile.passes.context import PassContext
from fp4compile.passes.site import is_fp4_node


def check_invariants(gm: fx.GraphModule) -> None:
    """Structural invariants, valid between any two passes (debug mode runs this after each pass)."""
    gm.graph.lint()
    for node in gm.graph.nodes:
        if is_fp4_node(node) or node.meta.get("fp4compile_seen"):
            if "val" not in node.meta:
                raise AssertionError(f"fp4compile: node {node.format_node()} has no meta['val']")
        if is_fp4_node(node) and node.target._schema.is_mutable:
            raise AssertionError(f"fp4compile: op {node.target} mutates its inputs")


def verify_graph(gm: fx.GraphModule, ctx: PassContext) -> None:
    """The last pass: the invariants, and every GEMM decided FP4 has been rewritten."""
    check_invariants(gm)
    alive = set(gm.graph.nodes)
    for site in ctx.sites:
        if site.quantized and site.node in alive:
            raise AssertionError(f"fp4compile: {site.role.value} GEMM of {site.name} was decided FP4 but is still in the graph")
