"""Pass 5: rewrite each quantized linear's GEMMs into fp4compile ops.

Per linear layer (x2d ``[T,K]``, B = permute(W) ``[K,N]``, E ``[T,N]``):

    w        = permute(B)                                       [N, K]
    seed     = fp4compile.step_seed(w, base_seed, key, state)   (training graphs; fresh per call)
    xq...    = fp4compile.quantize(x2d, recipe, "input", ..., form)  codes [T,K/2], scales, tensor scale, mask,
                                                                 and the GEMM-ready values when the plan says so
    wq...    = fp4compile.quantize(w,   recipe, "weight", ..., form)
    y        = fp4compile.output_gemm(xq..., wq...) (+ bias)    [T, N]    replaces the forward addmm/mm
    dX       = fp4compile.grad_input([E], wq..., x_mask, ...)   [T, K]    replaces the grad_input mm
    dW       = fp4compile.grad_weight([E], xq..., w_mask, ...)  [N, K]    replaces the grad_weight mm

E goes to the backward ops as a list of column blocks: for a fused layer (passes/fuse_linears.py) autograd forms
E as ``cat([E_q, E_k, E_v], -1)`` (the backward of the forward's split); the ops get the parts themselves, so that the
concatenated gradient is never written (Inductor would lower that cat as one kernel evaluating every part's
producer, measured at 1.7x-3.2x the parts' own kernels: docs/perf_notes.md, "The 1B step").

Because the backward ops read the quantize outputs, the partitioner saves FP4 codes and scales for the
backward instead of the high-precision activation (unless the recipe reads the high-precision X, as
NVIDIA's does). When the forward quantizers are deterministic the quantize ops get no seed, so equal
calls (the same x feeding q, k and v projections) are merged by common-subexpression elimination and
x is quantized once. Every inserted node gets ``meta["val"]`` from its fake implementation.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch._guards import detect_fake_mode
from torch.utils.checkpoint import CheckpointPolicy

import fp4compile.ops  # noqa: F401  (registers torch.ops.fp4compile)
from fp4compile.config import Source
from fp4compile.passes.assign_roles import source
from fp4compile.passes.context import PassContext
from fp4compile.passes.site import MatmulSite, Role, hinted_nbytes
from fp4compile.quantizers import get_quantizer
from fp4compile.seeds import step_seed

aten = torch.ops.aten
fp4 = torch.ops.fp4compile


class _Builder:
    """Inserts nodes with ``meta["val"]`` computed under the graph's fake mode."""

    def __init__(self, gm: fx.GraphModule):
        self.graph = gm.graph
        vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
        self.fake_mode = detect_fake_mode([v for v in vals if v is not None])

    def call(self, target, *args, like: fx.Node | None = None) -> fx.Node:
        node = self.graph.call_function(target, args)
        fake_args = fx.node.map_arg(args, lambda a: a.meta["val"])
        if self.fake_mode is not None:
            with self.fake_mode:
                node.meta["val"] = target(*fake_args)
        else:
            node.meta["val"] = target(*fake_args)
        if like is not None:
            for key in ("nn_module_stack", "fwd_nn_module_stack", "seq_nr", "partitioner_tag", "stack_trace", "autograd_backward"):
                if key in like.meta:
                    node.meta[key] = like.meta[key]
        node.meta["fp4compile_seen"] = True
        return node

    def getitems(self, node: fx.Node, n: int) -> list[fx.Node]:
        out = []
        for i in range(n):
            item = self.graph.call_function(operator.getitem, (node, i))
            item.meta["val"] = node.meta["val"][i]
            for key in ("partitioner_tag", "seq_nr", "nn_module_stack"):
                if key in node.meta:
                    item.meta[key] = node.meta[key]
            out.append(item)
        return out


_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)


def _grad_blocks(b: _Builder, grad: fx.Node) -> list[fx.Node]:
    """E [T, N] as column blocks when it is a ``cat`` along the last dimension (a fused layer's gradient), else ``[E]``: the
    parts themselves for a 2-D cat, ``[view(E_i, [T, N_i]) ...]`` for a view of a batched one (parts contiguous, static widths)."""
    viewed = grad.op == "call_function" and grad.target in _VIEWS and len(grad.args[1]) == 2
    cat = grad.args[0] if viewed else grad
    if not (isinstance(cat, fx.Node) and cat.op == "call_function" and cat.target == aten.cat.default):
        return [grad]
    parts, dim = cat.args[0], (cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0))
    rank = cat.meta["val"].dim()
    if dim % rank != rank - 1 or (not viewed and rank != 2):
        return [grad]
    if not viewed:  # the kernels read any strides
        return list(parts)
    vals = [p.meta.get("val") for p in parts]
    if any(v is None or not isinstance(v.shape[-1], int) or not v.is_contiguous() for v in vals):
        return [grad]
    rows = grad.args[1][0]  # T: an int, -1, or the node of a symbolic size
    with b.graph.inserting_after(grad):
        return [b.call(aten.view.default, p, [rows, v.shape[-1]], like=grad) for p, v in zip(parts, vals, strict=True)]


def _forward_is_random(ctx: PassContext) -> bool:
    spec = ctx.options.recipe.output
    return spec.rotation.is_random or any(q is not None and get_quantizer(q).stochastic for q in (spec.a, spec.b))


def _rewrite_linear(gm: fx.GraphModule, ctx: PassContext, b: _Builder, fwd: MatmulSite, backward: list[MatmulSite]) -> None:
    recipe, opts = ctx.options.recipe, ctx.options
    kernel = fwd.kernel
    node = fwd.node
    out_dtype = node.meta["val"].dtype
    k = fwd.a.meta["val"].shape[-1]
    needs_seed = ctx.training and (bool(backward) or _forward_is_random(ctx))
    random_forward = _forward_is_random(ctx)
    with b.graph.inserting_before(node):
        w = b.call(aten.permute.default, fwd.b, [1, 0], like=node)  # [K,N] -> [N,K]
        seed = None
        if needs_seed:
            seed = b.call(fp4.step_seed.default, w, opts.seed, fwd.key, ctx.state, like=node)
            seed.meta["recompute"] = CheckpointPolicy.MUST_SAVE  # one draw per call, in the forward: never recompute it
        # x gets no seed when the forward is deterministic, so that equal quantizations of one x merge;
        # W always gets the step's seed, which also places the draw in the forward (then saved).
        fallback = step_seed(opts.seed, fwd.key, -1)
        x_seed = seed if random_forward else None
        forms = {p.operand: p.form.value for p in fwd.layout}  # the layout plan (plan_layouts)
        x_form, w_form = forms.get("input", "packed"), forms.get("weight", "packed")
        xq = b.getitems(b.call(fp4.quantize.default, fwd.a, recipe.name, "input", x_seed, fallback if random_forward else 0, kernel, x_form, like=node), 6)
        wq = b.getitems(b.call(fp4.quantize.default, w, recipe.name, "weight", seed, fallback, kernel, w_form, like=node), 6)
        values = (xq[4], xq[5], wq[4], wq[5]) if x_form == w_form != "packed" else ()
        y = b.call(fp4.output_gemm.default, xq[0], xq[1], xq[2], wq[0], wq[1], wq[2], recipe.name, out_dtype, kernel, *values, like=node)
        if fwd.bias is not None:
            y = b.call(aten.add.Tensor, y, fwd.bias, like=node)
    node.replace_all_uses_with(y)
    gm.graph.erase_node(node)
    ctx.counters["rewritten_forward"] += 1

    x_mask = xq[3] if get_quantizer(recipe.output.a).has_mask else None
    w_mask = wq[3] if get_quantizer(recipe.output.b).has_mask else None
    w_quantized = recipe.weight_for_backward is Source.QUANTIZED
    x_quantized = recipe.input_for_backward is Source.QUANTIZED
    # what the backward reads of x, against x in BF16 (if nothing reads it, nothing is kept)
    read = (xq[:3] + ([x_mask] if x_mask is not None else [])) if x_quantized else [fwd.a]
    if not any(s.role is Role.GRAD_WEIGHT for s in backward):
        read = [x_mask] if x_mask is not None and any(s.role is Role.GRAD_INPUT for s in backward) else []
    fwd.bytes_saved_input = sum(hinted_nbytes(n.meta["val"]) for n in read)
    fwd.bytes_bf16_input = hinted_nbytes(fwd.a.meta["val"]) // fwd.a.meta["val"].element_size() * 2
    blocks: dict[fx.Node, list[fx.Node]] = {}  # E -> its column blocks (one list for both backward GEMMs)

    def grad_blocks(grad: fx.Node) -> list[fx.Node]:
        if grad not in blocks:
            blocks[grad] = _grad_blocks(b, grad)
            if len(blocks[grad]) > 1:
                ctx.counters["gradient_blocks"] += len(blocks[grad])
        return blocks[grad]

    for site in backward:
        bnode = site.node
        out_dtype = bnode.meta["val"].dtype
        with b.graph.inserting_before(bnode):
            if site.role is Role.GRAD_INPUT:
                grad = grad_blocks(bnode.args[0])  # E [T, N] as column blocks
                w_parts = wq[:3] if w_quantized else [None, None, None]
                w_hp = None if w_quantized else w
                new = b.call(fp4.grad_input.default, grad, *w_parts, w_hp, x_mask, k, recipe.name, seed, out_dtype, site.kernel, like=bnode)
            else:
                # mm(permute(E) [N,T], x2d) -> dW [N,K]; or mm(permute(x2d), E [T,N]) -> dW^T [K,N]
                transposed = source(bnode.args[0]) is source(fwd.a)
                if transposed:
                    grad = bnode.args[1]
                else:
                    e_t = bnode.args[0]
                    grad = e_t.args[0] if e_t.op == "call_function" and e_t.target == aten.permute.default else b.call(aten.permute.default, e_t, [1, 0], like=bnode)
                x_parts = xq[:3] if x_quantized else [None, None, None]
                x_hp = None if x_quantized else fwd.a
                new = b.call(fp4.grad_weight.default, grad_blocks(grad), *x_parts, x_hp, w_mask, k, recipe.name, seed, out_dtype, site.kernel, like=bnode)
                if transposed:
                    new = b.call(aten.permute.default, new, [1, 0], like=bnode)
        bnode.replace_all_uses_with(new)
        gm.graph.erase_node(bnode)
        ctx.counters[f"rewritten_{site.role.value}"] += 1


def _backward_form_ok(site: MatmulSite, fwd: MatmulSite) -> bool:
    """The forms we rewrite: grad_input = mm(E, .) -> [T,K]; grad_weight = mm(permute(E), x2d) -> [N,K]."""
    node = site.node
    if node.target != aten.mm.default:
        return False
    if site.role is Role.GRAD_INPUT:
        return tuple(node.meta["val"].shape) == tuple(fwd.a.meta["val"].shape)
    return node.args[1] is fwd.a or (source(node.args[0]) is source(fwd.a) and node.args[1] is not fwd.a)


def rewrite_linears(gm: fx.GraphModule, ctx: PassContext) -> None:
    b = _Builder(gm)
    for sites in ctx.linears().values():
        fwd = next((s for s in sites if s.role is Role.FORWARD), None)
        if fwd is None or not fwd.quantized:
            for site in sites:
                if site.quantized and site.role is not Role.FORWARD:
                    site.decide(False, "its forward GEMM stays in high precision")
            continue
        if fwd.node.meta.get("fp4compile_rewritten"):  # an earlier run of the pipeline did it
            continue
        backward = []
        for site in sites:
            if site.role in (Role.GRAD_INPUT, Role.GRAD_WEIGHT) and site.quantized:
                if _backward_form_ok(site, fwd):
                    backward.append(site)
                else:
                    site.decide(False, f"unrecognised {site.role.value} GEMM form {site.node.format_node()}")
        fwd.node.meta["fp4compile_rewritten"] = True
        _rewrite_linear(gm, ctx, b, fwd, backward)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
