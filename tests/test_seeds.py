"""Claims about reproducible randomness (fp4compile.seeds and the step_seed op), proved below:

* The step_seed op forms ``seeds.step_seed(base, site, step)`` from a counter on the anchor's device, one
  step per call, independently per call site and per compiled graph (state).
* A DeviceSeed (a seed that stays on the device) and the int it holds give the same rotation signs and
  the same sub-seeds: the Triton lowering and the reference rotate identically.
* The sign hash is in range and balanced: over many consecutive step seeds each sign is +1 half the time
  (within 4 sigma) and neighbouring positions and steps are uncorrelated.
"""

from __future__ import annotations

import torch

import fp4compile  # noqa: F401  (registers the fp4compile ops)
from fp4compile import seeds


def test_step_seed_op_counts_on_the_device_per_site_and_graph():
    anchor = torch.zeros(2, 2)
    op = torch.ops.fp4compile.step_seed.default
    state = 10_001  # a graph id no compile in this process uses
    got = [int(op(anchor, 5, "layers.0.up", state)) for _ in range(3)]
    assert got == [seeds.step_seed(5, "layers.0.up", t) for t in range(3)]
    assert int(op(anchor, 5, "layers.0.down", state)) == seeds.step_seed(5, "layers.0.down", 0)
    assert int(op(anchor, 5, "layers.0.up", state + 1)) == seeds.step_seed(5, "layers.0.up", 0)
    out = op(anchor, 5, "layers.0.up", state)
    assert out.shape == () and out.dtype == torch.int64 and out.device == anchor.device
    assert int(out) == seeds.step_seed(5, "layers.0.up", 3)


def test_device_seed_and_int_seed_draw_the_same_signs():
    value = seeds.step_seed(0, "attn.q_proj", 41)
    device_seed = seeds.DeviceSeed(torch.tensor([value], dtype=torch.int64))
    for names in [(), ("rotation", "backward"), ("grad_weight", "input")]:
        a, b = seeds.sub_seed(device_seed, *names), seeds.sub_seed(value, *names)
        assert a.item() == b
        assert torch.equal(seeds.random_signs(128, a), seeds.random_signs(128, b))
    assert seeds.host_seed(device_seed) == value


def test_sign_hash_in_range_and_balanced():
    bits = seeds.hash32(12345, torch.arange(1 << 16))
    assert int(bits.min()) >= 0 and int(bits.max()) < 2**32
    steps = torch.stack([seeds.random_signs(128, seeds.step_seed(0, "mlp.up", t)) for t in range(4096)])  # [steps, 128]
    sigma = 1 / 4096**0.5
    assert steps.mean(0).abs().max() < 4.5 * sigma  # every position: +1 half the time (max over 128 positions)
    assert (steps[:, 1:] * steps[:, :-1]).mean().abs() < 4 * sigma / 127**0.5  # neighbouring positions
    assert (steps[1:] * steps[:-1]).mean().abs() < 4 * sigma / 128**0.5  # consecutive steps
