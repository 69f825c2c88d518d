"""Claims about the plug-in API and the ops, proved below:

* A custom quantizer registered with ``register_quantizer`` works in a custom ``Recipe`` passed straight
  to ``torch.compile`` options, and the compiled model equals the eager reference under that recipe.
* A custom pass registered with ``register_pass`` runs in the pipeline at its place, and its decisions
  (here: keep one module in high precision) show in explain() with its reason, backward GEMMs included.
* The fp4compile ops pass ``torch.library.opcheck`` (schema, fake implementation, autograd registration).
* ``FP4COMPILE_DUMP`` writes each compiled graph's code, site table and Graphviz drawing.
"""

from __future__ import annotations

import os

import pytest
import torch

import fp4compile as f4
from examples.custom_quantizer import RMS_FWD, keep_first_layer_high_precision
from tests.models import batch, make_tiny, train_steps


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_custom_quantizer_in_custom_recipe_matches_eager():
    assert "nvfp4_rms" in f4.quantizers()
    model = make_tiny()
    compiled = torch.compile(model, backend="quartet", options={"recipe": RMS_FWD, "seed": 3})
    got = train_steps(compiled, 1)
    expected = train_steps(f4.quantize_linears(make_tiny(), RMS_FWD, seed=3), 1)
    (loss_a, grads_a), (loss_b, grads_b) = got[0], expected[0]
    assert abs(loss_a - loss_b) <= 1e-5 * abs(loss_b)
    for name in grads_b:
        assert (grads_a[name] - grads_b[name]).abs().max() <= 1e-5 * grads_b[name].abs().max()


def test_custom_pass_decides_and_reports():
    def keep_up(gm, ctx):
        for site in ctx.sites:
            if site.quantized and site.name == "up":
                site.decide(False, "custom policy: up kept in high precision")

    f4.register_pass(keep_up, after="apply_policy")
    try:
        assert f4.passes.pipeline().index("keep_up") == f4.passes.pipeline().index("apply_policy") + 1
        report = f4.explain(make_tiny(), *batch(), baseline=False)
    finally:
        f4.passes.unregister_pass("keep_up")
    up = [s for s in report.sites if s.name == "up"]
    assert len(up) == 3 and all(not s.quantized and "custom policy" in s.reason for s in up)
    assert any(s.quantized and s.name == "down" for s in report.sites)
    assert "keep_up" not in f4.passes.pipeline()
    with pytest.raises(ValueError, match="no such pass"):
        f4.register_pass(keep_first_layer_high_precision, after="nope")


def test_ops_pass_opcheck():
    x = torch.randn(32, 64)
    w = torch.randn(48, 64)
    seed = torch.tensor(123, dtype=torch.int64)
    ops = torch.ops.fp4compile
    for recipe in ("quartet", "quartet2", "nvidia"):
        torch.library.opcheck(ops.quantize.default, (x, recipe, "input", seed, 0, "reference"))
        xq = ops.quantize(x, recipe, "input", seed, 0, "reference")
        wq = ops.quantize(w, recipe, "weight", seed, 0, "reference")
        torch.library.opcheck(ops.output_gemm.default, (*xq[:3], *wq[:3], recipe, torch.float32, "reference"))
        grad = torch.randn(32, 48)
        mask_x = xq[3] if xq[3].numel() else None
        torch.library.opcheck(ops.grad_input.default, ([grad], *wq[:3], w, mask_x, 64, recipe, seed, torch.float32, "reference"))
        mask_w = wq[3] if wq[3].numel() else None
        torch.library.opcheck(ops.grad_weight.default, ([grad], *xq[:3], x, mask_w, 64, recipe, seed, torch.float32, "reference"))
        blocks = [grad[:, :16], grad[:, 16:]]  # E as column blocks (a fused layer's parts' gradients)
        torch.library.opcheck(ops.grad_input.default, (blocks, *wq[:3], w, mask_x, 64, recipe, seed, torch.float32, "reference"))
        torch.library.opcheck(ops.grad_weight.default, (blocks, *xq[:3], x, mask_w, 64, recipe, seed, torch.float32, "reference"))
    for blocks in ([], [grad, grad[:16]]):
        with pytest.raises(ValueError, match="non-empty list of 2-D column blocks"):
            ops.grad_input(blocks, *wq[:3], w, None, 64, "nvidia", seed, torch.float32, "reference")


def test_dump_env_writes_graphs(tmp_path, monkeypatch):
    monkeypatch.setenv("FP4COMPILE_DUMP", str(tmp_path))
    compiled = torch.compile(make_tiny(), backend="quartet")
    compiled(*batch()).backward()
    folders = list(tmp_path.iterdir())
    assert folders
    files = set(os.listdir(folders[0]))
    assert {"joint_before.py", "joint_after.py", "forward.py", "backward.py", "forward.dot", "backward.dot", "sites.txt"} <= files
    assert "fp4compile" in (folders[0] / "forward.dot").read_text()
    assert "up" in (folders[0] / "sites.txt").read_text()


def test_kernel_reason_names_plugin_quantizers_without_triton_rule():
    """On the triton target, explain() says which plug-in quantizers fall back to the reference."""
    from types import SimpleNamespace

    from fp4compile.lowering.select import _fallbacks
    from fp4compile.options import parse_options
    from fp4compile.passes import Role

    site = SimpleNamespace(role=Role.FORWARD)
    assert "no Triton rule for nvfp4_rms" in _fallbacks(parse_options({"recipe": RMS_FWD}), site)
    assert _fallbacks(parse_options({"recipe": "quartet2"}), site) == ""
    assert _fallbacks(parse_options({"recipe": RMS_FWD}), SimpleNamespace(role=Role.GRAD_INPUT)) == ""  # MS-EDEN has one
