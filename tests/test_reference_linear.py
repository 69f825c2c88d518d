"""Claims about the eager reference linear (fp4compile.reference.linear), proved below:

* Under each built-in recipe the forward output and both gradients are close to the high-precision
  linear's, with SQNR above a per-recipe floor (printed with -s); `bf16` is bit-identical to F.linear.
* It is exactly what composing the reference quantizers and GEMMs gives: the output equals
  gemm(Q(X R), Q(W R)) bit for bit, and the gradients of `quartet` and `quartet2` equal the formulas of
  their docstrings (16/9, masks, inverse rotation; MS-EDEN on E and the re-quantized operands).
* 3-D inputs, bias, frozen weights and inputs without grad work; the token and out-feature
  dimensions need not be multiples of the group (they are zero-padded); a bad in_features is an error
  that says what to do.
* ReferenceLinear draws fresh backward randomness per step, reproducibly per seed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fp4compile as f4
from fp4compile.reference import linear as rl
from fp4compile.reference.gemm import gemm_nt
from fp4compile.seeds import sub_seed
from tests.conftest import sqnr_db

FLOORS = {"quartet": (14, 7, 8), "quartet-sr": (14, 6, 7), "quartet2": (19, 14, 14), "nvidia": (18, 12, 12), "mxfp4-rtn": (16, 13, 13)}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to FP32 summation order and the rounding of 16/9: max error 1e-5 of the max value."""
    return (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()


def _problem(t=256, k=256, n=128):
    x = torch.randn(t, k, requires_grad=True)
    w = (torch.randn(n, k) / k**0.5).requires_grad_()
    b = torch.randn(n, requires_grad=True)
    return x, w, b, torch.randn(t, n)


def _run(fn, x, w, b, g):
    x.grad = w.grad = b.grad = None
    y = fn(x, w, b)
    y.backward(g)
    return y.detach(), x.grad.clone(), w.grad.clone(), b.grad.clone()


@pytest.mark.parametrize("recipe", f4.recipes())
def test_close_to_high_precision(recipe):
    x, w, b, g = _problem()
    ref = _run(F.linear, x, w, b, g)
    got = _run(lambda x, w, b: f4.reference_linear(x, w, b, recipe, seed=3), x, w, b, g)
    sq = [sqnr_db(a, r) for a, r in zip(got, ref, strict=False)]
    print(f"{recipe}: SQNR output {sq[0]:.1f} dB, grad_input {sq[1]:.1f} dB, grad_weight {sq[2]:.1f} dB")
    assert torch.equal(got[3], ref[3])  # the bias gradient is a plain sum
    if recipe == "bf16":
        assert all(torch.equal(a, r) for a, r in zip(got, ref, strict=False))
    else:
        assert all(s >= floor for s, floor in zip(sq, FLOORS[recipe], strict=False)), sq


@pytest.mark.parametrize("recipe", ["quartet", "quartet2", "nvidia", "mxfp4-rtn"])
def test_output_is_the_composed_reference(recipe):
    r = f4.get_recipe(recipe)
    x, w, b, _ = _problem()
    seed = 11
    rot, rseed = r.output.rotation, rl.rotation_seed(seed, "output")
    xq = f4.get_quantizer(r.output.a).quantize(rot.apply(x.detach(), rseed), sub_seed(seed, "output", "input"))
    wq = f4.get_quantizer(r.output.b).quantize(rot.apply(w.detach(), rseed), sub_seed(seed, "output", "weight"))
    expected = gemm_nt(xq, wq, torch.float32) + b
    assert torch.equal(f4.reference_linear(x, w, b, recipe, seed), expected)


def test_quartet_gradients_follow_the_formula():
    r = f4.get_recipe("quartet")
    x, w, b, g = _problem()
    seed = 5
    _, dx, dw, _ = _run(lambda x, w, b: f4.reference_linear(x, w, b, r, seed), x, w, b, g)
    h = f4.Rotation("hadamard", 32)
    xq = f4.get_quantizer("mxfp4_quest").quantize(h.apply(x.detach()))
    wq = f4.get_quantizer("mxfp4_quest").quantize(h.apply(w.detach()))
    rot, rseed = r.grad_input.rotation, rl.rotation_seed(seed, "backward")
    q34 = f4.get_quantizer("mxfp4_tseng_rtn")
    # dX = 16/9 ((Q34(E R) @ Q34(Wq^T R)^T) * Mx) H^T
    e_q, wt_q = q34.quantize(rot.apply(g, rseed)), q34.quantize(rot.apply(wq.dequantize().t(), rseed))
    prod = (e_q.block_values() @ wt_q.block_values().t()) * (16 / 9)
    assert _close(dx, h.undo(prod * xq.mask))
    # dW = 16/9 ((Q34(E^T R) @ Q34(Xq^T R)^T) * Mw) H^T
    et_q, xt_q = q34.quantize(rot.apply(g.t(), rseed)), q34.quantize(rot.apply(xq.dequantize().t(), rseed))
    prod = (et_q.block_values() @ xt_q.block_values().t()) * (16 / 9)
    assert _close(dw, h.undo(prod * wq.mask))


def test_quartet2_gradients_follow_the_formula():
    r = f4.get_recipe("quartet2")
    x, w, b, g = _problem()
    seed = 6
    _, dx, dw, _ = _run(lambda x, w, b: f4.reference_linear(x, w, b, r, seed), x, w, b, g)
    q46, eden = f4.get_quantizer("nvfp4_4over6"), f4.get_quantizer("nvfp4_ms_eden")
    xq, wq = q46.quantize(x.detach()), q46.quantize(w.detach())
    rot, rseed = r.grad_input.rotation, rl.rotation_seed(seed, "backward")
    s = lambda *names: sub_seed(seed, *names)  # noqa: E731
    # dX = MSEDEN(E R) @ MSEDEN(deq(Wq)^T R)^T
    expected_dx = gemm_nt(eden.quantize(rot.apply(g, rseed), s("grad_input", "grad_output")),
                          eden.quantize(rot.apply(wq.dequantize().t(), rseed), s("grad_input", "weight")), torch.float32)
    assert torch.equal(dx, expected_dx)
    # dW = MSEDEN(E^T R) @ MSEDEN(deq(Xq)^T R)^T
    expected_dw = gemm_nt(eden.quantize(rot.apply(g.t(), rseed), s("grad_weight", "grad_output")),
                          eden.quantize(rot.apply(xq.dequantize().t(), rseed), s("grad_weight", "input")), torch.float32)
    assert torch.equal(dw, expected_dw)


@pytest.mark.parametrize("recipe", ["quartet", "quartet2", "nvidia"])
def test_odd_tokens_and_out_features_are_padded(recipe):
    x = torch.randn(3, 37, 128, requires_grad=True)  # T = 111 tokens
    w = torch.randn(72, 128, requires_grad=True)  # N = 72
    y = f4.reference_linear(x, w, None, recipe, seed=0)
    y.square().sum().backward()
    assert y.shape == (3, 37, 72) and x.grad.shape == x.shape and torch.isfinite(w.grad).all()
    ref_w = torch.autograd.grad(F.linear(x, w).square().sum(), w)[0]
    assert sqnr_db(w.grad, ref_w) > 5


def test_frozen_weight_and_input_without_grad():
    x = torch.randn(64, 128)
    w = torch.randn(64, 128, requires_grad=True)
    f4.reference_linear(x, w, None, "quartet", 0).sum().backward()
    assert w.grad is not None
    x2 = torch.randn(64, 128, requires_grad=True)
    f4.reference_linear(x2, w.detach(), None, "quartet", 0).sum().backward()
    assert x2.grad is not None


def test_bad_in_features_is_a_clear_error():
    with pytest.raises(ValueError, match="in_features is 100.*skip it"):
        f4.reference_linear(torch.randn(4, 100), torch.randn(32, 100), None, "quartet", 0)


def test_unknown_recipe_lists_known():
    with pytest.raises(KeyError, match="known recipes: quartet, quartet-sr, quartet2"):
        f4.get_recipe("quartet3")


def test_reference_linear_module_steps_and_seeds():
    def grads(seed):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
        f4.quantize_linears(model, "quartet", seed=seed)
        x = torch.randn(32, 64)
        out = []
        for _ in range(2):
            model.zero_grad()
            model(x).sum().backward()
            out.append(model[0].weight.grad.clone())
        return out

    a, b = grads(0), grads(0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # reproducible
    assert not torch.equal(a[0], a[1])  # fresh backward rotation each step
    assert not torch.equal(a[0], grads(1)[0])


def test_quantize_linears_skips_heads_and_tied_weights():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 32)
            self.body = torch.nn.Linear(32, 32)
            self.lm_head = torch.nn.Linear(32, 10)
            self.tied = torch.nn.Linear(32, 10, bias=False)
            self.tied.weight = self.emb.weight

    m = f4.quantize_linears(M(), "quartet2")
    assert isinstance(m.body, f4.ReferenceLinear)
    assert type(m.lm_head) is torch.nn.Linear and type(m.tied) is torch.nn.Linear
