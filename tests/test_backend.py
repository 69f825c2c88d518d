"""Claims about the ``quartet`` backend, proved below on a tiny model with 3-D activations, biases, a
frozen layer, an untied head and a tied head:

* For every built-in recipe the compiled model's loss and every gradient equal the eager reference
  linear's under the same recipe and seed (up to FP32 summation order), over two steps (so the step
  counters agree too).
* explain() shows three rewritten GEMMs per quantized linear (two for the frozen one) and every
  skipped GEMM with its reason; the saved input of a quantized linear is at most a third of BF16.
* Compile ladder: eager reference == backend without Inductor == backend with Inductor; no graph
  breaks; recompiles counted (new batch size -> one more graph; dynamic=True -> none).
* Under no_grad / inference_mode only forward GEMMs are rewritten; a model whose linears are all
  skipped still compiles and says so; calls draw fresh backward randomness each step and equal seeds
  give equal runs.
* Clear errors: unknown recipe or option, a bad in_features with bad_shapes="error" (names the module
  and dimension), a kernel target the machine lacks. The entry point is registered.
"""

from __future__ import annotations

import pytest
import torch

import fp4compile as f4
from fp4compile.backend import recording
from fp4compile.passes import Role
from tests.models import batch, make_tiny, train_steps

RECIPES = f4.recipes()


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _assert_same(a, b, rtol=1e-5):
    for (loss_a, grads_a), (loss_b, grads_b) in zip(a, b, strict=True):
        assert abs(loss_a - loss_b) <= rtol * abs(loss_b), (loss_a, loss_b)
        assert grads_a.keys() == grads_b.keys()
        for name in grads_a:
            err = (grads_a[name] - grads_b[name]).abs().max().item()
            assert err <= rtol * grads_b[name].abs().max().item() + 1e-12, (name, err)


def _compiled_run(recipe: str, steps: int = 2, **options):
    model = make_tiny()
    with recording() as records:
        compiled = torch.compile(model, backend="quartet", options={"recipe": recipe, "seed": 7, **options})
        result = train_steps(compiled, steps)
    return result, records


@pytest.mark.parametrize("recipe", RECIPES)
def test_compiled_equals_eager_reference(recipe):
    compiled, records = _compiled_run(recipe)
    eager = train_steps(f4.quantize_linears(make_tiny(), recipe, seed=7), 2)
    _assert_same(compiled, eager)
    sites = [s for r in records for s in r.sites]
    by_module = {}
    for s in sites:
        by_module.setdefault(s.name, []).append(s)
    quantized = {name: sorted(s.role.value for s in ss if s.quantized) for name, ss in by_module.items()}
    if recipe == "bf16":
        assert all(not v for v in quantized.values())
        assert all("keeps every GEMM" in s.reason for s in sites)
    else:
        assert quantized["up"] == quantized["down"] == ["forward", "grad_input", "grad_weight"]
        assert quantized["frozen"] == ["forward", "grad_input"]
        assert quantized["lm_head"] == [] and all("lm_head" in s.reason for s in by_module["lm_head"])
        assert quantized["<root>"] == [] and all("embedding" in s.reason for s in by_module["<root>"])


def test_compile_ladder_and_no_graph_breaks():
    from torch._dynamo.utils import counters

    counters.clear()
    eager = train_steps(f4.quantize_linears(make_tiny(), "quartet", seed=7), 2)
    no_inductor, rec_a = _compiled_run("quartet", inductor=False)
    torch._dynamo.reset()
    inductor, rec_b = _compiled_run("quartet")
    _assert_same(no_inductor, eager)
    _assert_same(inductor, eager)
    assert len(rec_a) == len(rec_b) == 1  # one graph each: no graph break
    assert not counters["graph_break"]


def test_explain_report_and_saved_memory():
    model = make_tiny()
    report = f4.explain(model, *batch(), recipe="quartet")
    text = str(report)
    print(text)
    assert "up" in text and "matches skip pattern 'lm_head'" in text and "tied output head" in text
    assert report.counters["rewritten_forward"] == 3
    assert report.counters["rewritten_grad_input"] == 3 and report.counters["rewritten_grad_weight"] == 2
    ratios = report.input_ratios()
    assert ratios["up"] <= 1 / 3 and ratios["down"] <= 1 / 3
    assert report.baseline_saved_bytes and report.saved_bytes < report.baseline_saved_bytes
    graphs = report.graphs
    assert {"forward", "backward", "joint_before", "joint_after", "forward_before", "backward_before"} <= set(graphs)
    assert "fp4compile.quantize" in graphs["joint_after"] and "fp4compile" not in graphs["joint_before"]
    assert all(p.grad is None for p in model.parameters())  # explain leaves no gradients behind
    assert "backward GEMMs: their result is held in float32 before the trust mask" in text  # an FP32 model's gradients
    bf16 = str(f4.explain(make_tiny().bfloat16(), *batch(), recipe="quartet", baseline=False))
    assert "backward GEMMs: their result is held in bfloat16 before the trust mask" in bf16


def test_quartet2_input_saved_at_most_a_third():
    report = f4.explain(make_tiny(), *batch(), recipe="quartet2", baseline=False)
    ratios = report.input_ratios()
    print(ratios)
    assert ratios["up"] <= 1 / 3 and ratios["down"] <= 1 / 3


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_rewrites_forward_only(mode):
    model = make_tiny()
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with recording() as records, ctx:
        compiled = torch.compile(model, backend="quartet")
        loss = compiled(*batch())
    ref = f4.quantize_linears(make_tiny(), "quartet", seed=0)
    with torch.no_grad():
        expected = ref(*batch())
    assert abs(loss.item() - expected.item()) <= 1e-5 * abs(expected.item())
    sites = [s for r in records for s in r.sites]
    assert {s.role for s in sites} == {Role.FORWARD}
    assert sum(s.quantized for s in sites) == 3


def test_changed_shapes_recompile_and_dynamic():
    model = make_tiny()
    with recording() as records:
        compiled = torch.compile(model, backend="quartet")
        for b, s in ((2, 16), (3, 16), (2, 24)):
            compiled(*batch(b, s)).backward()
    assert len(records) >= 2  # a new batch size recompiles (then Dynamo may go dynamic)
    torch._dynamo.reset()
    with recording() as records:
        compiled = torch.compile(make_tiny(), backend="quartet", dynamic=True)
        for b, s in ((2, 16), (3, 16), (2, 21)):
            compiled(*batch(b, s)).backward()
    print(f"dynamic=True: {len(records)} compile(s) for 3 shapes")
    assert len(records) <= 2  # symbolic shapes from the start (a specialisation guard may add one)


def test_all_skipped_model_compiles_and_says_so():
    report = f4.explain(make_tiny(), *batch(), skip=["*"], baseline=False)
    assert report.counters["quantized_sites"] == 0
    assert "no GEMM was quantized" in str(report)


def test_fresh_randomness_per_step_and_reproducible():
    a, _ = _compiled_run("quartet2")
    torch._dynamo.reset()
    b, _ = _compiled_run("quartet2")
    _assert_same(a, b, rtol=0)
    assert not torch.equal(a[0][1]["up.weight"], b[1][1]["up.weight"])  # step 1 drew other rotations
    torch._dynamo.reset()
    c, _ = _compiled_run("quartet2", seed=8)
    assert not torch.equal(a[0][1]["up.weight"], c[0][1]["up.weight"])


def test_errors_are_clear():
    model = make_tiny()
    with pytest.raises(Exception, match="unknown recipe 'quartet3'; known recipes"):
        torch.compile(model, backend="quartet", options={"recipe": "quartet3"})(*batch())
    with pytest.raises(Exception, match="unknown fp4compile option.*'sed'"):
        torch.compile(model, backend="quartet", options={"sed": 1})(*batch())
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="'triton' needs a CUDA GPU"):
            torch.compile(model, backend="quartet", options={"kernels": "triton"})(*batch())
    odd = torch.nn.Sequential(torch.nn.Linear(100, 64))
    with pytest.raises(Exception, match=r"module '0': in_features K=100 is not a multiple of 32"):
        torch.compile(odd, backend="quartet", options={"bad_shapes": "error"})(torch.randn(4, 100))
    torch._dynamo.reset()
    with pytest.warns(UserWarning, match="in_features K=100"):
        report = f4.explain(odd, torch.randn(4, 100), baseline=False)
    assert report.sites[0].reason == "in_features K=100 is not a multiple of 32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of the option")
def test_cudagraphs_option_off_with_a_reason_where_ops_cannot_be_captured():
    """cudagraphs=True on the CPU (the reference kernels read seeds on the host): a warning says why it is
    off, and the run equals the eager reference; without Inductor the option is an error."""
    torch._dynamo.reset()
    with pytest.warns(UserWarning, match=r"cudagraphs'\] is off for this graph: '\w+' \(\w+\) runs the reference kernels"):
        compiled, records = _compiled_run("quartet", cudagraphs=True)
    assert records[0].counters["cudagraphs_off"] >= 1 and records[0].cudagraphs.startswith("off: ")
    from fp4compile.explain import Report

    assert "CUDA graphs: off: " in str(Report("quartet", records))
    _assert_same(compiled, train_steps(f4.quantize_linears(make_tiny(), "quartet", seed=7), 2))
    with pytest.raises(Exception, match="cudagraphs'\\]=True needs Inductor"):
        torch.compile(make_tiny(), backend="quartet", options={"cudagraphs": True, "inductor": False})(*batch())


def test_entry_point_registered():
    assert "quartet" in torch._dynamo.list_backends()


def test_pipeline_is_idempotent(monkeypatch):
    import fp4compile.backend as backend

    codes = []

    def twice(gm, ctx):
        backend_run(gm, ctx)
        codes.append(gm.code)
        backend_run(gm, ctx)
        codes.append(gm.code)

    backend_run = backend.run_pipeline
    monkeypatch.setattr(backend, "run_pipeline", twice)
    with recording() as records:
        torch.compile(make_tiny(), backend="quartet", options={"debug": True})(*batch()).backward()
    assert len(codes) == 2 and codes[0] == codes[1]
    assert sum(s.quantized for s in records[0].sites) == 8  # decisions are not duplicated


class _RawMatmul(torch.nn.Module):
    """A linear written as x @ W with W stored [K, N] (the transposed operand form), on a 3-D input."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(64, 32) / 8)

    def forward(self, x):
        return (x @ self.w).relu().sum()


def test_transposed_weight_operand():
    torch.manual_seed(0)
    model = _RawMatmul()
    x = torch.randn(2, 8, 64, requires_grad=True)
    with recording() as records:
        torch.compile(model, backend="quartet", options={"recipe": "quartet2"})(x).backward()
    roles = sorted(s.role.value for s in records[0].sites if s.quantized)
    assert roles == ["forward", "grad_input", "grad_weight"], [(s.role, s.reason) for s in records[0].sites]
    expected_w = torch.autograd.grad((x @ model.w).relu().sum(), model.w)[0]
    assert model.w.grad.shape == (64, 32) and torch.nn.functional.cosine_similarity(model.w.grad.flatten(), expected_w.flatten(), dim=0) > 0.9
