"""``fp4compile.explain``: what the backend rewrote, what it left alone and why, and what it saves.

``explain(model, *inputs, **options)`` compiles the model with the ``quartet`` backend, runs one forward
and backward (the backward graph compiles lazily, at the first backward), and returns a
:class:`Report`: one row per GEMM site (module, role, shape, quantizers, kernel, or the reason it stayed
in high precision), the layout plan of every quantized operand (what its kernel reads, along which axis,
in which form for which GEMM, padding, the copy saved for the backward), the MXFP4 groups folded into FP8
(and those not exact), the graphs before and after the rewrite, counters, and the bytes the backward keeps
against the same model compiled with the ``bf16`` control recipe (measured, not estimated). The model's
parameters and their ``.grad`` are left as they were.

Setting ``FP4COMPILE_DUMP=folder`` (or ``options["dump_dir"]``) makes every compiled graph write the
same material to that folder, with a Graphviz drawing of the rewritten graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from fp4compile.backend import GraphRecord, quartet_backend, recording
from fp4compile.passes.fuse_linears import describe as describe_fusions
from fp4compile.passes.site import MatmulSite, Role, is_fp4_node
from fp4compile.reference.linear import grad_gemm_dtype


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@dataclass
class Report:
    """The outcome of :func:`explain` (also printable)."""

    recipe: str
    records: list[GraphRecord]
    baseline: list[GraphRecord] = field(default_factory=list)
    fold_stats: dict[str, int] = field(default_factory=dict)  # MXFP4 -> FP8 folds during the run (Hopper GEMMs)

    @property
    def sites(self) -> list[MatmulSite]:
        return [s for r in self.records for s in r.sites]

    @property
    def graphs(self) -> dict[str, object]:
        """``forward``, ``backward`` (or ``inference``) GraphModules after the rewrite, the joint graph's code
        before and after (``joint_before``, ``joint_after``), and the control's ``forward_before`` and
        ``backward_before``. With several Dynamo graphs the keys get a ``:i`` suffix from the second on."""
        out: dict[str, object] = {}
        for i, r in enumerate(self.records):
            suffix = "" if i == 0 else f":{i}"
            for k, g in r.graphs.items():
                out[k + suffix] = g
            for k in ("joint_before", "joint_after", "inference_before", "inference_after"):
                if k in r.code:
                    out[k + suffix] = r.code[k]
        for i, r in enumerate(self.baseline):
            suffix = "" if i == 0 else f":{i}"
            for k, g in r.graphs.items():
                out[f"{k}_before{suffix}"] = g
        return out

    @property
    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.records:
            for k, v in r.counters.items():
                total[k] = total.get(k, 0) + v
        total["graphs"] = len(self.records)
        total["gemm_sites"] = len(self.sites)
        total["quantized_sites"] = sum(s.quantized for s in self.sites)
        total["skipped_sites"] = sum(not s.quantized for s in self.sites)
        return total

    @property
    def saved_bytes(self) -> int:
        """Bytes of activations the backward keeps (parameters excluded)."""
        return sum(r.saved_activation_bytes() for r in self.records)

    @property
    def baseline_saved_bytes(self) -> int | None:
        return sum(r.saved_activation_bytes() for r in self.baseline) if self.baseline else None

    def input_ratios(self) -> dict[str, float]:
        """Per quantized linear: bytes kept of its input x / bytes of x in BF16."""
        return {s.key: s.bytes_saved_input / s.bytes_bf16_input for s in self.sites if s.bytes_saved_input is not None and s.bytes_bf16_input}

    def layout(self) -> dict[tuple, list[str]]:
        """The layout plan (lowering/layout_plan.py): each distinct set of operand plans -> the linears that use it."""
        plans: dict[str, list] = {}
        for s in self.sites:
            if s.quantized and s.layout:
                plans.setdefault(s.key or s.name, []).extend(s.layout)
        order = {"output": 0, "grad_input": 1, "grad_weight": 2}
        groups: dict[tuple, list[str]] = {}
        for key, ops in plans.items():
            groups.setdefault(tuple(sorted(set(ops), key=lambda p: (order[p.gemm], p.operand))), []).append(key)
        return groups

    def table(self) -> str:
        rows = [("module", "role", "shape", "fp4", "quantizers / reason", "kernel")]
        order = {}
        for s in self.sites:
            order.setdefault(s.key or s.name, len(order))
        roles = [Role.FORWARD, Role.GRAD_INPUT, Role.GRAD_WEIGHT, Role.BACKWARD, Role.UNPAIRED]
        for s in sorted(self.sites, key=lambda s: (order[s.key or s.name], roles.index(s.role))):
            what = s.quantizers if s.quantized else s.reason
            if s.notes:
                what += " [" + "; ".join(s.notes) + "]"
            rows.append((s.name, s.role.value, "x".join(map(str, s.shape)), "yes" if s.quantized else "no", what, s.kernel or "-"))
        widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        c = self.counters
        head = f"fp4compile.explain: recipe {self.recipe!r}, {c['graphs']} graph(s), {c['quantized_sites']} of {c['gemm_sites']} GEMMs in FP4"
        if c["quantized_sites"] == 0:
            head += " (no GEMM was quantized: see the reasons below)"
        parts = [head, "", self.table(), ""]
        base = self.baseline_saved_bytes
        saved = f"saved for backward (activations): {_fmt_bytes(self.saved_bytes)}"
        if base:
            saved += f" vs {_fmt_bytes(base)} with the bf16 control ({self.saved_bytes / base:.2f}x)"
        parts.append(saved)
        for key, ratio in self.input_ratios().items():
            parts.append(f"  input of {key}: the backward reads {ratio:.3f}x of its BF16 size")
        fused = [line for r in self.records for line in describe_fusions(r.fused)]
        if fused:
            parts.append("fused linear layers (option fuse_linears):")
            parts += [f"  {line}" for line in fused]
            if c.get("gradient_blocks"):
                parts.append(f"  backward: their parts' gradients go to the grad GEMMs as {c['gradient_blocks']} column blocks, never concatenated")
        held = sorted({str(grad_gemm_dtype(s.node.meta["val"].dtype)).removeprefix("torch.") for s in self.sites
                       if s.quantized and s.role in (Role.GRAD_INPUT, Role.GRAD_WEIGHT) and "val" in s.node.meta})
        if held:
            parts.append(f"backward GEMMs: their result is held in {' / '.join(held)} before the trust mask and the inverse forward "
                         "rotation (BF16 for a BF16 gradient: reference.linear.grad_gemm_dtype)")
        for plans, keys in self.layout().items():
            parts.append(f"layout plan ({len(keys)} linear{'s' if len(keys) > 1 else ''}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}):")
            parts += [f"  {p.describe()}" for p in plans]
        for i, r in enumerate(self.records):
            if r.cudagraphs:
                note = " (Inductor may still skip a graph for its own reasons: its log says 'skipping cudagraphs')" if r.cudagraphs == "on" else ""
                parts.append(f"CUDA graphs{f' (graph {i})' if len(self.records) > 1 else ''}: {r.cudagraphs}{note}")
        if self.fold_stats.get("groups"):
            parts.append(f"MXFP4 groups folded into FP8: {self.fold_stats['groups']:,}, of which not exact (over 14 binades below "
                         f"their row's largest): {self.fold_stats['unfoldable_groups']:,}")
        return "\n".join(parts)

    __repr__ = __str__


def _run_once(model: torch.nn.Module, inputs, options: dict) -> list[GraphRecord]:
    grads = {p: p.grad for p in model.parameters()}
    try:
        with recording() as records:
            compiled = torch.compile(model, backend=quartet_backend, options=options)
            out = compiled(*inputs)
            tensors = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
            if tensors and torch.is_grad_enabled():
                sum(t.float().sum() for t in tensors).backward()
    finally:
        for p, g in grads.items():
            p.grad = g
    return list(records)


def explain(model: torch.nn.Module, *example_inputs, baseline: bool = True, **options) -> Report:
    """Compile ``model`` with the backend under ``options``, run it once forward and backward, report."""
    from fp4compile.lowering import hopper_gemm
    from fp4compile.options import parse_options

    opts = parse_options(options)
    before = hopper_gemm.fold_stats()
    records = _run_once(model, example_inputs, options)
    after = hopper_gemm.fold_stats()
    folds = {k: after[k] - before[k] for k in after}
    base = []
    if baseline and opts.recipe.quantized:
        base = _run_once(model, example_inputs, {**options, "recipe": "bf16", "dump_dir": None})
    return Report(opts.recipe.name, records, base, folds)


# ------------------------------------------------------------------------------------------------
# Dumping to a folder (FP4COMPILE_DUMP)
# ------------------------------------------------------------------------------------------------


def graph_to_dot(gm: fx.GraphModule, title: str) -> str:
    """A Graphviz drawing of a graph: fp4compile ops filled orange, GEMMs left in high precision grey."""
    lines = [f'digraph "{title}" {{', "  rankdir=TB; node [shape=box, fontsize=10, style=filled, fillcolor=white];"]
    for node in gm.graph.nodes:
        label = node.name if node.op != "call_function" else f"{node.name}\\n{node.target}"
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            label += f"\\n{str(val.dtype).replace('torch.', '')}[{','.join(map(str, val.shape))}]"
        color = "orange" if is_fp4_node(node) else "lightgrey" if node.op == "call_function" and "mm" in str(node.target) else "white"
        lines.append(f'  "{node.name}" [label="{label}", fillcolor={color}];')
        for inp in node.all_input_nodes:
            lines.append(f'  "{inp.name}" -> "{node.name}";')
    lines.append("}")
    return "\n".join(lines)


def dump_record(record: GraphRecord, folder: str) -> None:
    """Write a record's code, drawings and site table to ``folder/graph_<state>/``."""
    out = os.path.join(folder, f"graph_{record.state}")
    os.makedirs(out, exist_ok=True)
    for name, code in record.code.items():
        with open(os.path.join(out, f"{name}.py"), "w") as f:
            f.write(code)
    for name, gm in record.graphs.items():
        with open(os.path.join(out, f"{name}.dot"), "w") as f:
            f.write(graph_to_dot(gm, name))
    report = Report(record.options.recipe.name, [record])
    with open(os.path.join(out, "sites.txt"), "w") as f:
        f.write(str(report) + "\n")


__all__ = ["Report", "Role", "explain", "graph_to_dot"]
