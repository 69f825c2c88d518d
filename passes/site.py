"""``MatmulSite``: one GEMM of a graph, in the words passes and plug-ins use.

A linear layer ``y = x W^T`` shows up in the joint forward+backward graph as up to three GEMMs that
share a ``seq_nr`` (the autograd sequence number of the forward op):

    forward      addmm(bias, x2d [T,K], permute(W) [K,N]) -> [T,N]      (or mm without bias)
    grad_input   mm(E [T,N], permute(permute(W)) [N,K])   -> [T,K]      (absent if x needs no grad)
    grad_weight  mm(permute(E) [N,T], x2d [T,K])          -> [N,K]      (absent for a frozen W)

Each becomes a site; sites of one linear share ``key``. Passes fill in the role, the policy decision
(``quantized`` / ``reason``), the kernel and, once rewritten, the nodes that replaced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch.fx as fx


class Role(str, Enum):
    FORWARD = "forward"
    GRAD_INPUT = "grad_input"
    GRAD_WEIGHT = "grad_weight"
    BACKWARD = "backward"  # a backward GEMM whose role is not known yet
    UNPAIRED = "unpaired"  # a backward GEMM with no forward partner


@dataclass
class MatmulSite:
    node: fx.Node
    role: Role
    module: str  # FQN of the module the GEMM belongs to ("" = the compiled module itself)
    seq_nr: int | None
    shape: tuple
    weight: str | None = None  # FQN of the weight parameter, when one operand is a parameter
    key: str = ""  # shared by the GEMMs of one linear layer (the site name used for seeds)
    quantized: bool = False
    reason: str = ""
    kernel: str = ""
    kernel_reason: str = ""
    quantizers: str = ""
    bytes_saved_input: int | None = None  # what the backward reads of x (FP4 codes, scales, mask; or x)
    bytes_bf16_input: int | None = None  # x in BF16
    notes: list[str] = field(default_factory=list)
    layout: tuple = ()  # OperandPlan of each operand of this GEMM (lowering/layout_plan.py), set by plan_layouts
    # set by the passes for the rewrite: the forward operands, and the rewritten nodes
    a: fx.Node | None = None
    b: fx.Node | None = None
    bias: fx.Node | None = None
    weight_node: fx.Node | None = None

    @property
    def name(self) -> str:
        return self.module or "<root>"

    def decide(self, quantized: bool, reason: str = "") -> None:
        self.quantized, self.reason = quantized, reason


def hinted_nbytes(val) -> int:
    """Bytes of a (fake) tensor; symbolic sizes count at their hint (the example input's size), 0 without one."""
    n = 1
    for d in val.shape:
        n *= int(d) if isinstance(d, int) else int(getattr(d.node, "hint", None) or 0)
    return n * val.element_size()


def is_fp4_node(node: fx.Node) -> bool:
    return node.op == "call_function" and getattr(node.target, "namespace", None) == "fp4compile"
