"""Claims about fusing linear layers that share an input (passes/fuse_linears.py), on the CPU reference path:

* Under a deterministic MXFP4 recipe (``mxfp4-rtn``) the fused model computes what the separate layers do: the
  output, dX and every parameter's gradient (biases and an odd-sized k included) within FP32 summation order; the
  backward ops get the parts' gradients as column blocks, not their concatenation.
* Under ``quartet`` the forward is unchanged and the gradients carry the same quantization error against FP32
  autograd (other random rotations: statistically, not bit for bit).
* ``fuse_linears="auto"`` fuses MXFP4 recipes, not NVFP4 ones (their tensor scales would span the fused layer);
  False fuses nothing; a ``skip`` glob or a frozen weight keeps that layer out of the fusion; explain() names the fused layer.
* Layers in different autocast / no_grad regions or on either side of an in-place update of their input are never
  fused together (each keeps its dtype, grad mode and input).
* The pass is idempotent, and a bad option value is an error naming the valid ones.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fp4compile
from fp4compile.backend import _dynamo_param_names, recording
from fp4compile.options import parse_options
from fp4compile.passes.fuse_linears import fuse_parallel_linears


class Block(nn.Module):
    """q/k/v read one input (k narrower, all with biases), o reads another."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(64, 64), nn.Linear(64, 32), nn.Linear(64, 64)
        self.o = nn.Linear(64, 64, bias=False)

    def forward(self, x):
        return self.o(torch.tanh(self.q(x)) * self.k(x).repeat(1, 1, 2) + self.v(x))


def _run(model, x, **options):
    torch._dynamo.reset()
    m, xx = copy.deepcopy(model), x.clone().requires_grad_()
    with recording() as records:
        y = torch.compile(m, backend="quartet", options=options)(xx)
        y.square().sum().backward()
    blocks = sum(r.counters["gradient_blocks"] for r in records)  # E's column blocks handed to the backward ops
    return y.detach(), xx.grad, {n: p.grad for n, p in m.named_parameters()}, [f for r in records for f in r.fused], blocks


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    return Block(), torch.randn(2, 32, 64)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_fused_equals_separate_under_a_deterministic_recipe(block):
    model, x = block
    sep = _run(model, x, recipe="mxfp4-rtn", fuse_linears=False)
    fused = _run(model, x, recipe="mxfp4-rtn", fuse_linears=True)
    assert sep[3] == [] and [(f.name, f.modules, f.out_features) for f in fused[3]] == [("q+k+v", ("q", "k", "v"), (64, 32, 64))]
    assert (sep[4], fused[4]) == (0, 3)  # the backward ops read q's, k's and v's gradients, not their concatenation
    assert _rel(fused[0], sep[0]) < 1e-6 and _rel(fused[1], sep[1]) < 1e-6
    for name, grad in sep[2].items():
        assert _rel(fused[2][name], grad) < 1e-6, name


def test_quartet_fused_has_the_same_forward_and_gradient_error(block):
    model, x = block
    m, xx = copy.deepcopy(model), x.clone().requires_grad_()
    m(xx).square().sum().backward()
    exact = {n: p.grad for n, p in m.named_parameters()}
    sep = _run(model, x, recipe="quartet", fuse_linears=False)
    fused = _run(model, x, recipe="quartet")  # auto: an MXFP4 recipe, N_i multiples of 32
    assert [f.name for f in fused[3]] == ["q+k+v"]
    assert torch.equal(fused[0], sep[0])
    for name in ("q.weight", "k.weight", "v.weight"):
        err_sep, err_fused = _rel(sep[2][name], exact[name]), _rel(fused[2][name], exact[name])
        assert 0.5 < err_fused / err_sep < 2.0, (name, err_sep, err_fused)
    assert 0.5 < _rel(fused[1], xx.grad) / _rel(sep[1], xx.grad) < 2.0


def test_what_auto_fuses_and_what_explain_says(block):
    model, x = block
    assert _run(model, x, recipe="nvidia")[3] == []  # NVFP4: tensor scales
    forced = _run(model, x, recipe="nvidia", fuse_linears=True)  # runs, the tensor scales spanning the fused layer
    assert [f.name for f in forced[3]] == ["q+k+v"] and all(torch.isfinite(g).all() for g in forced[2].values())
    assert [f.modules for f in _run(model, x, recipe="quartet", skip=["k"])[3]] == [("q", "v")]
    frozen = copy.deepcopy(model)
    frozen.k.weight.requires_grad_(False)  # a frozen part stays apart: its gradient would be computed for nothing
    assert [f.modules for f in _run(frozen, x, recipe="quartet")[3]] == [("q", "v")]
    torch._dynamo.reset()
    report = str(fp4compile.explain(model, x, recipe="quartet"))
    assert "q+k+v: q, k, v share their input: one linear of 160 = 64 + 32 + 64 outputs" in report
    assert "q+k+v   grad_weight  160x64" in report
    assert "their parts' gradients go to the grad GEMMs as 3 column blocks, never concatenated" in report


class Regions(nn.Module):
    """Linears on one input in different global-state regions (autocast, no_grad) and two in one region."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(64, 64, bias=False) for _ in range(4))

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = self.a(x), self.b(x)
        c = self.c(x)
        with torch.no_grad():
            d = self.d(x)
        return (a.float() * b.float()).sum() + c.sum() + d.sum(), a.dtype, c.dtype, d.requires_grad


def test_no_fusion_across_autocast_or_no_grad():
    torch.manual_seed(1)
    model, x = Regions(), torch.randn(8, 64)
    torch._dynamo.reset()
    with recording() as records:
        _, a_dtype, c_dtype, d_grad = torch.compile(model, backend="quartet")(x.requires_grad_())
    assert [f.modules for r in records for f in r.fused] == [("a", "b")]  # only the two inside one autocast region
    assert (a_dtype, c_dtype, d_grad) == (torch.bfloat16, torch.float32, False)


class Mutation(nn.Module):
    """b reads h after an in-place update: it must not move before it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False)

    def forward(self, x):
        h = x * 1.0
        a = self.a(h)
        h.add_(1.0)
        return a.sum() + self.b(h).sum()


def test_no_fusion_across_an_in_place_update():
    torch.manual_seed(2)
    model, x = Mutation(), torch.randn(8, 64)
    outs = {}
    for fuse in ("auto", False):
        torch._dynamo.reset()
        with recording() as records, torch.no_grad():  # (in training autograd itself forbids updating a saved input)
            outs[fuse] = torch.compile(model, backend="quartet", options={"fuse_linears": fuse})(x)
        assert [r.fused for r in records] == [[]]
    assert torch.equal(outs["auto"], outs[False])


class Functional(nn.Module):
    """F.linear on the model's own parameters (no submodules)."""

    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(64, 64) / 8), nn.Parameter(torch.randn(32, 64) / 8)

    def forward(self, x):
        return (torch.nn.functional.linear(x, self.w1)[:, :32] * torch.nn.functional.linear(x, self.w2)).sum()


def test_functional_linears_are_named_by_their_parameters():
    torch._dynamo.reset()
    report = str(fp4compile.explain(Functional(), torch.randn(8, 64)))
    assert "w1+w2: w1, w2 share their input: one linear of 96 = 64 + 32 outputs" in report


def test_the_pass_is_idempotent(block):
    model, x = block
    counts = []

    def backend(gm, example_inputs):
        names, options = _dynamo_param_names(gm), parse_options({"recipe": "quartet"})
        counts.append((len(fuse_parallel_linears(gm, names, options)), len(fuse_parallel_linears(gm, names, options))))
        return gm

    torch._dynamo.reset()
    torch.compile(model, backend=backend)(x)
    assert counts == [(1, 0)]


def test_bad_option_value():
    with pytest.raises(ValueError, match="'fuse_linears' takes 'auto', True or False"):
        parse_options({"fuse_linears": "yes"})


class Flat(nn.Module):
    """Two layers reading one 2-D input: the fused layer's gradient is a cat of 2-D parts, with no view between."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64, bias=False), nn.Linear(64, 32, bias=False)

    def forward(self, x):
        return torch.tanh(self.a(x))[:, :32] * self.b(x)


def test_two_dimensional_parts_reach_the_backward_as_blocks():
    torch.manual_seed(0)
    model, x = Flat(), torch.randn(16, 64)
    sep = _run(model, x, recipe="mxfp4-rtn", fuse_linears=False)
    fused = _run(model, x, recipe="mxfp4-rtn", fuse_linears=True)
    assert [f.name for f in fused[3]] == ["a+b"] and fused[4] == 2
    for name, grad in sep[2].items():
        assert _rel(fused[2][name], grad) < 1e-6, name


class GatedUnit(nn.Module):
    """SwiGLU: gate and up read one input and are multiplied together; down reads their product."""

    def __init__(self, act=torch.nn.functional.silu):
        super().__init__()
        self.gate, self.up = nn.Linear(64, 128, bias=False), nn.Linear(64, 128, bias=False)
        self.down = nn.Linear(128, 64, bias=False)
        self.act = act

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


def _contiguous_parts(model, x) -> list[int]:
    """For each graph Dynamo hands the backend: the parts of fused outputs given their own tensor (``contiguous`` calls)."""
    counts = []

    def backend(gm, example_inputs):
        fuse_parallel_linears(gm, _dynamo_param_names(gm), parse_options({"recipe": "quartet"}))
        counts.append(sum(n.op == "call_method" and n.target == "contiguous" for n in gm.graph.nodes))
        return gm

    torch._dynamo.reset()
    torch.compile(model, backend=backend)(x)
    return counts


def test_a_gated_units_parts_stay_views_of_the_fused_output(block):
    """The product's backward saves both of a gated unit's parts, so copies would only cost writes: its parts stay
    views (q/k/v's each get a tensor of their own, and so do a sigmoid gate's parts: sigmoid saves its output, not the
    gate); the fused gated unit computes what the separate one does."""
    torch.manual_seed(2)
    gated, x = GatedUnit(), torch.randn(2, 32, 64)
    assert _contiguous_parts(gated, x) == [0] and _contiguous_parts(*block) == [3]
    assert _contiguous_parts(GatedUnit(torch.sigmoid), x) == [2]
    sep = _run(gated, x, recipe="mxfp4-rtn", fuse_linears=False)
    fused = _run(gated, x, recipe="mxfp4-rtn", fuse_linears=True)
    assert [f.modules for f in fused[3]] == [("gate", "up")] and fused[4] == 2
    assert _rel(fused[0], sep[0]) < 1e-6 and _rel(fused[1], sep[1]) < 1e-6
    for name, grad in sep[2].items():
        assert _rel(fused[2][name], grad) < 1e-6, name
