"""Pass 0 (on Dynamo's graph, before autograd): linear layers that read the same input become one linear layer.

Attention's q/k/v projections and the MLP's gate/up projections read one activation each. As separate layers,
every one of them pays the FP4 recipe's per-layer work on that shared input: its own backward re-quantization
of X^T along T, its own grad_input epilogue (mask, inverse rotation, cast) and an add of partial dX. Fused,

    W = cat([W_q, W_k, W_v])  [N_q+N_k+N_v, K]      y = x W^T  [T, N_q+N_k+N_v]      y_q, y_k, y_v = split(y)

and autograd derives one grad_input GEMM ``dX = E W`` (E = cat of the three gradients, the sum over N inside
the GEMM's FP32 accumulation) and one grad_weight GEMM whose rows are the three weights' gradients. The rewrite
pass hands the backward ops the three gradients as column blocks of E, which the kernels quantize in place:
the concatenated E is never written (passes/rewrite_linears.py).

Numerics: with MXFP4 quantizers (no per-tensor scale) every group of the fused operands is a group of one of
the separate ones when each N_i is a multiple of the backward's groups and rotation size, so the fused
layer multiplies the same FP4 values as the separate ones (the forward GEMM and every deterministic backward
quantization are equal up to FP32 summation order); only the random rotations and stochastic rounding draw
from the fused layer's seed. NVFP4's per-tensor scale would span the fused weight and gradient, so
``fuse_linears="auto"`` (the default) fuses only recipes without a tensor-scaled quantizer, and only where
each N_i is such a multiple; ``True`` fuses every group, ``False`` none.

Fused: two or more ``linear`` calls on one input node whose weights are parameters of one shape along K, one
dtype and device, all trainable or all frozen, used by nothing else, with no bias or a parameter bias each, none
matching a ``skip`` glob, plain tensors (no DTensor or other subclass), and none across an autocast, no_grad or other global-state boundary or an in-place op.
Each part of the fused output is its own tensor (``contiguous``), as the separate layer's
was: a view would keep the whole output alive wherever the backward saves one part (measured at 1B: +4.7 GiB of peak
memory from attention's saved v). The two parts of a gated unit (SwiGLU's gate and up, multiplied together) stay views:
their product's backward saves both, so the whole output is alive anyway, and copies would only cost writes. The fused layer is named ``<parent>.<a>+<b>+...`` (e.g.
``layers.0.attn.q_proj+k_proj+v_proj``) in ``explain()``. Idempotent: a fused linear reads a ``cat``, not a
parameter, so it is never fused again.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensor

from fp4compile.options import FuseLinears, Options
from fp4compile.quantized import ScaleFormat
from fp4compile.quantizers import get_quantizer
from fp4compile.reference.linear import skip_reason

_LINEAR = torch._C._nn.linear


@dataclass(frozen=True)
class FusedLinear:
    name: str  # the fused layer's module name, e.g. "layers.0.attn.q_proj+k_proj+v_proj"
    modules: tuple[str, ...]  # the separate layers' module names
    out_features: tuple[int, ...]


def _module_of(weight_name: str) -> str:
    return weight_name.rpartition(".")[0]


def _fused_name(modules: list[str]) -> str:
    parent, _, first = modules[0].rpartition(".")
    rest = [m.rpartition(".")[2] if m.rpartition(".")[0] == parent else m for m in modules[1:]]
    return ".".join(p for p in (parent, "+".join([first, *rest])) if p)


def _n_multiple(options: Options) -> int:
    """What each N_i must be a multiple of for the fused backward to quantize the same groups: the grad GEMMs'
    inner groups and rotations along N (grad_input's E and W^T)."""
    return options.recipe.grad_input.inner_multiple() if options.recipe.grad_input.quantized else 1


def _tensor_scaled(options: Options) -> bool:
    r = options.recipe
    names = [q for g in (r.output, r.grad_input, r.grad_weight) for q in (g.a, g.b) if q is not None]
    return any(get_quantizer(q).scale_format is not ScaleFormat.E8M0 for q in names)


_INPLACE_OPERATORS = {operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift,
                      operator.imatmul}


def _is_boundary(node: fx.Node) -> bool:
    """Whether ``node`` enters or leaves a global-state region of Dynamo's graph (``_enter_autocast``,
    ``_exit_autocast``, ``_set_grad_enabled``, ...) or mutates a tensor in place (``add_``, ``x[i] = ...``, ``+=``):
    the fused linear is inserted at the first part's place, so the parts must not straddle one (a later part would
    run before the mutation of its input, or in another autocast or grad mode)."""
    if node.op not in ("call_function", "call_method"):
        return False
    if node.target in _INPLACE_OPERATORS:
        return True
    name = getattr(node.target, "__name__", str(node.target))
    return name.startswith(("_enter_", "_exit_", "_set_")) or (name.endswith("_") and not name.startswith("__"))


def _param(node, params: dict[fx.Node, str]) -> str | None:
    return params.get(node) if isinstance(node, fx.Node) else None


def fuse_parallel_linears(gm: fx.GraphModule, param_names: list[str | None], options: Options) -> list[FusedLinear]:
    """Fuse, in place, the linear layers of Dynamo's graph ``gm`` that share an input; returns what was fused.

    ``param_names``: for each placeholder of ``gm`` in order, the parameter FQN it holds (None for inputs).
    """
    if options.fuse_linears is FuseLinears.NEVER or not options.recipe.quantized:
        return []
    if options.fuse_linears is FuseLinears.AUTO and _tensor_scaled(options):
        return []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    params = {n: p for n, p in zip(placeholders, param_names, strict=False) if p}
    multiple = _n_multiple(options) if options.fuse_linears is FuseLinears.AUTO else 1
    groups: dict[tuple, list[fx.Node]] = {}
    region = 0  # between global-state changes and in-place ops: a linear never moves across one
    for node in gm.graph.nodes:
        if _is_boundary(node):
            region += 1
            continue
        if node.op != "call_function" or node.target is not _LINEAR or node.kwargs or len(node.args) not in (2, 3):
            continue
        x, w = node.args[0], node.args[1]
        bias = node.args[2] if len(node.args) == 3 else None
        w_name = _param(w, params)
        if not isinstance(x, fx.Node) or w_name is None or len(w.users) != 1 or (bias is not None and (_param(bias, params) is None or len(bias.users) != 1)):
            continue
        val = w.meta.get("example_value")
        # plain tensors only: a tensor subclass (a DTensor sharded along N, ...) would not concatenate as its local data
        if type(val) is not FakeTensor or val.dim() != 2 or not isinstance(val.shape[0], int) or val.shape[0] % multiple:
            continue
        if skip_reason(_module_of(w_name), options.skip):
            continue
        # one input and state region; one K, dtype and device; all trainable or all frozen (a frozen part would get a
        # gradient computed for nothing); all with a bias or none
        groups.setdefault((x, region, val.shape[1], val.dtype, val.device, val.requires_grad, bias is not None), []).append(node)
    fused = [_fuse(gm, nodes, params) for nodes in groups.values() if len(nodes) > 1]
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused


def _fuse(gm: fx.GraphModule, nodes: list[fx.Node], params: dict[fx.Node, str]) -> FusedLinear:
    graph = gm.graph
    weights = [n.args[1] for n in nodes]
    biases = [n.args[2] for n in nodes] if len(nodes[0].args) == 3 and nodes[0].args[2] is not None else None
    modules = [_module_of(params[w]) or params[w] for w in weights]  # a root-level parameter of F.linear: its own name
    name = _fused_name(modules)
    sizes = [w.meta["example_value"].shape[0] for w in weights]
    first = nodes[0]
    vals = [n.meta.get("example_value") for n in nodes]
    fake_mode = getattr(weights[0].meta["example_value"], "fake_mode", None)  # the example values' own mode
    stack = dict(first.meta.get("nn_module_stack", {}))
    if stack:  # the innermost entry names the fused layer: explain() and the seeds key on it
        key, (qualname, cls) = list(stack.items())[-1]
        stack[key] = (qualname.rpartition(".")[0] + "." + name.rpartition(".")[2], cls)

    def add(target, args, val):
        node = graph.call_function(target, args)
        node.meta.update({k: v for k, v in first.meta.items() if k in ("stack_trace", "source_fn_stack")})
        node.meta["nn_module_stack"] = stack
        node.meta["example_value"] = val
        return node

    def fake(fn):
        if fake_mode is None:
            return None
        with fake_mode:
            return fn()

    with graph.inserting_before(first):
        # W = cat([W_1, ..., W_n])  [sum N_i, K];  y = x W^T (+ b)  [..., sum N_i]
        w_cat = add(torch.cat, (weights, 0), fake(lambda: torch.cat([w.meta["example_value"] for w in weights], 0)))
        args = (first.args[0], w_cat)
        if biases is not None:
            b_cat = add(torch.cat, (biases, 0), fake(lambda: torch.cat([b.meta["example_value"] for b in biases], 0)))
            args = (*args, b_cat)
        y = add(_LINEAR, args, fake(lambda: torch.empty(*vals[0].shape[:-1], sum(sizes), dtype=vals[0].dtype, device=vals[0].device)))
        parts = add(torch.split, (y, sizes, -1), tuple(vals))
        gated = _gated_pair(nodes)
        for i, old in enumerate(nodes):
            item = add(operator.getitem, (parts, i), vals[i])
            part = item
            if not gated:
                # each part as its own tensor, as the separate layer's output was: a view would keep the whole fused output
                # alive wherever the backward saves one part (attention saves v: 3x its bytes at q/k/v); Inductor folds
                # the copy into pointwise consumers and materializes it only for others (SDPA's v)
                part = graph.call_method("contiguous", (item,))
                part.meta.update(item.meta)
            old.replace_all_uses_with(part)
    for old in nodes:
        graph.erase_node(old)
    return FusedLinear(name, tuple(modules), tuple(sizes))


# activations whose backward needs their input (so a gate part is saved through them); ReLU, sigmoid and tanh save their
# output instead, and a view would keep the gate's bytes alive for nothing
_ACTIVATIONS = {torch.nn.functional.silu, torch.nn.functional.gelu}
_PRODUCTS = {operator.mul, torch.mul}


def _reaches_product(n: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """(the value that reaches a product, the product) when ``n``'s one use is a product, directly or through one
    elementwise activation with one use; else None."""
    if len(n.users) != 1:
        return None
    (u,) = n.users
    if u.op == "call_function" and u.target in _ACTIVATIONS and not u.kwargs.get("inplace") and len(u.users) == 1:
        n, u = u, next(iter(u.users))
    is_product = (u.op == "call_function" and u.target in _PRODUCTS) or (u.op == "call_method" and u.target == "mul")
    return (n, u) if is_product else None


def _gated_pair(nodes: list[fx.Node]) -> bool:
    """Whether the two layers are a gated unit's (SwiGLU's ``silu(x W_1^T) * x W_3^T``, GeGLU's): their outputs are the
    two operands of one product, each used only there (directly or through SiLU / GELU, which save their input). That
    product's backward saves both operands (and the activation's input), so the whole fused output is alive in the
    backward either way: the parts stay views of it, with no copies of their own to write (at 1B, gate/up's copies cost
    3.8 ms of a 365 ms step: the forward SwiGLU kernel took 442 us per layer with them, 250 without)."""
    if len(nodes) != 2:
        return False
    a, b = _reaches_product(nodes[0]), _reaches_product(nodes[1])
    return a is not None and b is not None and a[1] is b[1] and set(a[1].args[:2]) == {a[0], b[0]}


def describe(fusions: list[FusedLinear]) -> list[str]:
    """One line per fused layer, for explain()."""
    return [f"{f.name}: {', '.join(f.modules)} share their input: one linear of {sum(f.out_features)} = "
            f"{' + '.join(map(str, f.out_features))} outputs" for f in fusions]

