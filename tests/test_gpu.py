"""GPU claims (skipped without CUDA), run on the device machine:

* The backend on a CUDA model equals the eager reference on the same device in fp32 (loss and every
  gradient) for quartet, quartet2 and nvidia: the CPU-side step seed travels with CUDA tensors. In
  bf16 the two agree closely (loss within 1%, gradient SQNR > 10 dB), not exactly (see the test).
* The fp4compile ops run on CUDA tensors and give the same codes and scales as on the CPU.
* With options cudagraphs=True the compiled steps replay CUDA graphs and equal the host-launched ones.
"""

from __future__ import annotations

import pytest
import torch

import fp4compile as f4
from tests.conftest import requires_cuda, sqnr_db
from tests.models import batch, make_tiny, train_steps

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield


class _OnDevice(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx, targets):
        return self.model(idx.cuda(), targets.cuda())


@pytest.mark.parametrize("recipe", ["quartet", "quartet2", "nvidia"])
def test_cuda_compiled_equals_eager_fp32(recipe):
    compiled = torch.compile(_OnDevice(make_tiny().cuda()), backend="quartet", options={"recipe": recipe, "seed": 1, "kernels": "reference"})
    got = train_steps(compiled, 2)
    eager = train_steps(f4.quantize_linears(_OnDevice(make_tiny().cuda()), recipe, seed=1), 2)
    for (la, ga), (lb, gb) in zip(got, eager, strict=True):
        assert abs(la - lb) <= 1e-5 * abs(lb)
        for name in gb:
            assert (ga[name] - gb[name]).abs().max() <= 1e-4 * gb[name].abs().max(), name


@pytest.mark.parametrize("recipe", ["quartet", "quartet2"])
def test_cuda_bf16_close_to_eager(recipe):
    """In bf16, Inductor computes the elementwise ops in fp32 and rounds once while eager rounds after
    every op; FP4 rounding then flips for a few values, so the runs agree closely but not exactly."""
    compiled = torch.compile(_OnDevice(make_tiny().cuda().bfloat16()), backend="quartet", options={"recipe": recipe, "seed": 1, "kernels": "reference"})
    (la, ga), = train_steps(compiled, 1)
    (lb, gb), = train_steps(f4.quantize_linears(_OnDevice(make_tiny().cuda().bfloat16()), recipe, seed=1), 1)
    assert abs(la - lb) <= 1e-2 * abs(lb)
    for name in gb:
        assert sqnr_db(ga[name].float(), gb[name].float()) > 10, name


@pytest.mark.parametrize("name", ["mxfp4_quest", "nvfp4_4over6", "nvfp4_ms_eden"])
def test_quantizers_same_on_cuda_and_cpu(name):
    x = torch.randn(256, 512)
    q = f4.get_quantizer(name)
    a, b = q.quantize(x, seed=3), q.quantize(x.cuda(), seed=3)
    assert torch.equal(a.codes, b.codes.cpu()) and torch.equal(a.scales, b.scales.cpu())


@pytest.mark.parametrize("recipe,floor_db", [("quartet", 20), ("quartet-sr", 3), ("quartet2", 8), ("nvidia", 8), ("mxfp4-rtn", 20)])
def test_triton_lowering_matches_reference_lowering(recipe, floor_db):
    """kernels='triton' vs kernels='reference' on the GPU: the same FP4 values (deterministic recipes: only
    the FP8 GEMM's accumulation and rare boundary flips differ; stochastic ones draw other uniforms, so two
    independent SR draws are compared: quartet-sr's SR noise alone puts that near 5 dB on this tiny model)."""
    def run(kernels):
        torch._dynamo.reset()
        model = _OnDevice(make_tiny().cuda())
        compiled = torch.compile(model, backend="quartet", options={"recipe": recipe, "seed": 1, "kernels": kernels})
        return train_steps(compiled, 1)[0]

    (la, ga), (lb, gb) = run("triton"), run("reference")
    print(f"{recipe}: loss triton {la:.6f} reference {lb:.6f}; grad SQNR", {n: round(sqnr_db(ga[n], gb[n]), 1) for n in gb})
    assert abs(la - lb) <= 2e-3 * abs(lb)
    for name in gb:
        assert sqnr_db(ga[name], gb[name]) > floor_db, name


def _graph_steps(model, steps: int) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """Forward+backward on one CUDA batch, ``steps`` times: only the step's randomness changes."""
    idx, targets = (t.cuda() for t in batch())
    out = []
    for _ in range(steps):
        for p in model.parameters():
            p.grad = None
        loss = model(idx, targets)
        loss.backward()
        out.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    return out


@pytest.mark.parametrize("recipe", ["quartet", "quartet2"])
def test_cudagraph_replays_equal_plain_launches(recipe):
    """options={'cudagraphs': True}: Inductor captures the graphs with the fp4compile ops inside (no skip),
    and the replays give the losses and gradients of the same compile launched from the host, step for
    step. The step seeds advance on the device, so every replay draws new rotations and rounding: the
    gradients of one batch differ between steps (a frozen seed would repeat them)."""
    from torch._dynamo.utils import counters

    def run(cudagraphs: bool):
        torch._dynamo.reset()
        model = make_tiny().cuda()
        compiled = torch.compile(model, backend="quartet", options={"recipe": recipe, "seed": 1, "kernels": "triton", "cudagraphs": cudagraphs})
        return _graph_steps(compiled, 4)

    plain = run(False)
    counters.clear()
    graphed = run(True)
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    for (la, ga), (lb, gb) in zip(graphed, plain, strict=True):
        assert abs(la - lb) <= 1e-5 * abs(lb)
        for name in gb:
            assert sqnr_db(ga[name], gb[name]) > 60, name
    assert any(not torch.equal(graphed[-1][1][n], graphed[-2][1][n]) for n in graphed[-1][1])
