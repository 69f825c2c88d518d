"""The ``quartet`` torch.compile backend.

``torch.compile(model, backend="quartet", options={...})`` finds this function through the
``torch_dynamo_backends`` entry point. For each graph Dynamo captures it:

1. parses the options (errors list the valid ones) and checks the kernel target exists here; fuses the
   linear layers that share an input into one (``passes/fuse_linears.py``, on Dynamo's graph, so that
   autograd derives the fused backward);
2. hands the graph to Inductor's ``compile_fx`` with our pass pipeline in the ``joint_custom_pre_pass``
   slot: AOTAutograd builds the joint forward+backward graph (or the forward-only graph under
   ``no_grad``), the pipeline rewrites the linear layers' GEMMs into fp4compile ops, the min-cut
   partitioner splits it, and Inductor compiles everything else as usual. With ``inductor=False`` the
   same passes run through ``aot_autograd`` with a custom partition function and the graphs run eagerly
   (the middle rung of the compile ladder). With ``cudagraphs`` (or ``mode="reduce-overhead"``) Inductor
   replays each graph as a CUDA graph, unless its ops read seeds on the host (``cudagraph_blocker``: then
   that graph runs without, with a warning saying why);
3. keeps a :class:`GraphRecord` of what it did (sites, graphs, saved tensors, counters) for
   ``fp4compile.explain`` and for tests, and dumps it to a folder when ``FP4COMPILE_DUMP`` or the
   ``dump_dir`` option is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from fp4compile.lowering.select import check_target, cudagraph_blocker
from fp4compile.options import Options, parse_options
from fp4compile.passes.context import PassContext, placeholder_param_names
from fp4compile.passes.fuse_linears import FusedLinear, fuse_parallel_linears
from fp4compile.passes.pipeline import pipeline_key, run_pipeline
from fp4compile.passes.site import MatmulSite, hinted_nbytes

DUMP_ENV = "FP4COMPILE_DUMP"
_STATES = itertools.count()
_RECORDERS: list[list[GraphRecord]] = []


@dataclass
class SavedTensor:
    name: str
    shape: tuple
    dtype: torch.dtype
    nbytes: int
    is_parameter: bool


@dataclass
class GraphRecord:
    """What the backend did to one Dynamo graph (one per compile, recompiles included)."""

    state: int
    options: Options
    sites: list[MatmulSite] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    code: dict[str, str] = field(default_factory=dict)  # readable code of joint_before/after, forward, backward, inference
    graphs: dict[str, fx.GraphModule] = field(default_factory=dict)
    saved: list[SavedTensor] = field(default_factory=list)
    cudagraphs: str = ""  # with options['cudagraphs']: "on", or "off: <why>" (explain() prints it)
    fused: list[FusedLinear] = field(default_factory=list)  # linear layers that share an input, made one (passes/fuse_linears.py)

    def saved_activation_bytes(self) -> int:
        return sum(s.nbytes for s in self.saved if not s.is_parameter)


@contextlib.contextmanager
def recording() -> Iterator[list[GraphRecord]]:
    """Collect the :class:`GraphRecord` of every graph compiled inside the block."""
    records: list[GraphRecord] = []
    _RECORDERS.append(records)
    try:
        yield records
    finally:
        _RECORDERS.remove(records)


_PARAM_PART = re.compile(r"\['([^']+)'\]")


def _dynamo_param_names(gm: fx.GraphModule) -> list[str | None]:
    """For each Dynamo placeholder, the parameter FQN it holds (None for inputs and buffers)."""
    names: list[str | None] = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        grapharg = node.meta.get("grapharg")
        src = getattr(grapharg, "source", None)
        text = "" if src is None else src.name() if callable(src.name) else str(src.name)  # a method before torch 2.13
        if "_parameters" in text or ".parameters" in text:
            names.append(".".join(_PARAM_PART.findall(text)[1:]) or None)
        else:
            names.append(None)
    return names


def _saved_tensors(backward: fx.GraphModule, param_placeholders: set[str]) -> list[SavedTensor]:
    out = []
    for node in backward.graph.nodes:
        val = node.meta.get("val")
        if node.op != "placeholder" or node.name.startswith("tangents") or not isinstance(val, torch.Tensor):
            continue
        nbytes = hinted_nbytes(val)
        out.append(SavedTensor(node.name, tuple(val.shape), val.dtype, nbytes, node.name in param_placeholders))
    return out


class _JointPass:
    """The pipeline in Inductor's ``joint_custom_pre_pass`` slot (a CustomGraphPass with a stable uuid)."""

    def __init__(self, fn, key: str):
        self.fn, self.key = fn, key

    def __call__(self, graph: fx.Graph) -> None:
        self.fn(graph.owning_module)

    def uuid(self) -> str:
        return self.key


def _make_custom_pass(fn, key: str):
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class JointPass(_JointPass, CustomGraphPass):
        pass

    return JointPass(fn, key)


def quartet_backend(gm: fx.GraphModule, example_inputs, options: dict | None = None, mode: str | None = None, **unused):
    """The Dynamo backend entry point (``backend="quartet"``)."""
    if unused:
        raise TypeError(f"fp4compile's backend got unexpected arguments {sorted(unused)}; pass settings in options={{...}}")
    opts = parse_options(options)
    check_target(opts.kernels)
    if opts.cudagraphs and not opts.inductor:
        raise ValueError("options['cudagraphs']=True needs Inductor (it captures Inductor's compiled graphs); drop 'inductor': False or 'cudagraphs'")
    state = next(_STATES)
    record = GraphRecord(state=state, options=opts)
    dynamo_params = _dynamo_param_names(gm)
    record.fused = fuse_parallel_linears(gm, dynamo_params, opts)  # before autograd: it derives the fused backward
    param_placeholders: set[str] = set()

    def joint_pass(joint: fx.GraphModule) -> None:
        training = any(n.op == "placeholder" and n.name.startswith("tangents") for n in joint.graph.nodes)
        ctx = PassContext(options=opts, state=state, training=training)
        ctx.param_names = placeholder_param_names(joint, dynamo_params)
        param_placeholders.update(ctx.param_names)
        record.code["joint_before" if training else "inference_before"] = joint.print_readable(print_output=False)
        run_pipeline(joint, ctx)
        record.sites.extend(ctx.sites)
        record.counters.update(ctx.counters)
        record.code["joint_after" if training else "inference_after"] = joint.print_readable(print_output=False)

    def keep(kind: str, graph: fx.GraphModule) -> None:
        record.graphs[kind] = graph
        record.code[kind] = graph.print_readable(print_output=False)
        if kind == "backward":
            record.saved = _saved_tensors(graph, param_placeholders)
        _publish(record)

    for records in _RECORDERS:
        records.append(record)
    if opts.inductor:
        compiled = _compile_inductor(gm, example_inputs, opts, state, joint_pass, keep, mode, record)
    else:
        compiled = _compile_eager(gm, example_inputs, joint_pass, keep)
    return compiled


def _cache_key(opts: Options, state: int) -> str:
    text = f"{opts.key()}|{state}|{pipeline_key()}"
    return "fp4compile-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _compile_inductor(gm, example_inputs, opts: Options, state: int, joint_pass, keep, mode: str | None, record: GraphRecord):
    from torch._inductor.compile_fx import compile_fx, compile_fx_inner

    def inner_compile(graph: fx.GraphModule, inputs, **kwargs):
        kind = "backward" if kwargs.get("is_backward") else "inference" if kwargs.get("is_inference") else "forward"
        keep(kind, graph)
        cudagraphs = kwargs.get("cudagraphs")
        if cudagraphs is not None and cudagraphs.value:
            blocker = cudagraph_blocker(opts, record.sites)
            record.cudagraphs = "on" if blocker is None else f"off: {blocker}"
            if blocker is not None:  # Inductor's own switch for this graph (and the rest of this compile)
                record.counters["cudagraphs_off"] += 1
                warnings.warn(f"fp4compile: options['cudagraphs'] is off for this graph: {blocker}", stacklevel=2)
                cudagraphs.value = False
        return compile_fx_inner(graph, inputs, **kwargs)

    patches = {"joint_custom_pre_pass": _make_custom_pass(joint_pass, _cache_key(opts, state))}
    if mode is not None and mode != "default":
        patches.update(torch._inductor.list_mode_options(mode))
    if opts.cudagraphs:
        patches["triton.cudagraphs"] = True
    # The AOTAutograd cache would skip the joint pass on a hit (and so the records and the step
    # counters of this graph); Inductor's FX graph cache stays on: it is keyed on the rewritten graphs.
    with torch._functorch.config.patch(enable_autograd_cache=False):
        return compile_fx(gm, example_inputs, inner_compile=inner_compile, config_patches=patches)


def _compile_eager(gm, example_inputs, joint_pass, keep):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    def partition(joint, joint_inputs, **kwargs):
        joint_pass(joint)
        return min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)

    def compiler(kind):
        def run(graph, inputs):
            if kind == "inference":
                joint_pass(graph)
            keep(kind, graph)
            return make_boxed_func(graph.forward)

        return run

    backend = aot_autograd(
        fw_compiler=compiler("forward"),
        bw_compiler=compiler("backward"),
        inference_compiler=compiler("inference"),
        partition_fn=partition,
        decompositions=select_decomp_table(),
    )
    return backend(gm, example_inputs)


def _publish(record: GraphRecord) -> None:
    folder = record.options.dump_dir or os.environ.get(DUMP_ENV)
    if folder:
        from fp4compile.explain import dump_record

        dump_record(record, folder)
