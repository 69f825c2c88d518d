"""Claims about the ``triton`` lowering of the fp4compile ops (lowering/triton_ops.py), on the GPU or on the
CPU under TRITON_INTERPRET=1, against the reference lowering of the same ops:

* ``quantize`` (forward X and W), in the form the layout plan picks (packed + FP8 values for MXFP4 where
  this torch has a row-wise FP8 GEMM, packed + BF16 values for NVFP4), returns bit-identical codes,
  scales, tensor scale and mask for every built-in recipe's forward quantizers (all deterministic).
* ``output_gemm``, ``grad_input`` and ``grad_weight`` agree with the reference ops: for deterministic
  recipes up to the GEMM's accumulation (and, after a re-quantization, rare one-step flips of values on a
  rounding boundary), for stochastic ones statistically (other uniforms): SQNR floors per recipe.
"""

from __future__ import annotations

import pytest
import torch

import fp4compile  # noqa: F401  (registers torch.ops.fp4compile)
from fp4compile.config import get_recipe
from fp4compile.lowering.layout_plan import plan_linear
from tests.conftest import kernel_device, requires_triton, run_linear_ops, sqnr_db

pytestmark = requires_triton
DEV = kernel_device()
FLOORS = {"quartet": 30, "quartet-sr": 8, "quartet2": 8, "nvidia": 8, "mxfp4-rtn": 30}


@pytest.mark.parametrize("recipe", list(FLOORS))
def test_triton_ops_match_reference_ops(recipe):
    torch.manual_seed(0)
    t, k, n = 96, 128, 64  # T not a multiple of 128: the backward pads it
    x = torch.randn(t, k, device=DEV)
    w = torch.randn(n, k, device=DEV) / k**0.5
    e = torch.randn(t, n, device=DEV)
    seed = torch.tensor(77, dtype=torch.int64)
    forms = {p.operand: p.form.value for p in plan_linear(get_recipe(recipe), "triton", DEV) if p.gemm == "output"}
    xq_r, wq_r, y_r, dx_r, dw_r = run_linear_ops(x, w, e, recipe, seed, "reference", "packed", "packed")
    xq_t, wq_t, y_t, dx_t, dw_t = run_linear_ops(x, w, e, recipe, seed, "triton", forms["input"], forms["weight"])
    print(recipe, "forward forms", forms)
    for a, b in zip(xq_r[:4] + wq_r[:4], xq_t[:4] + wq_t[:4], strict=True):  # the packed outputs
        assert torch.equal(a.cpu().reshape(-1), b.cpu().reshape(-1))
    sq = {"output": sqnr_db(y_t, y_r), "grad_input": sqnr_db(dx_t, dx_r), "grad_weight": sqnr_db(dw_t, dw_r)}
    print(recipe, {key: round(v, 1) for key, v in sq.items()})
    assert sq["output"] > 60  # same FP4 values; only the GEMM's accumulation differs
    assert sq["grad_input"] > FLOORS[recipe] and sq["grad_weight"] > FLOORS[recipe]


@pytest.mark.parametrize("recipe", ["quartet", "mxfp4-rtn"])
def test_bf16_gradients_agree_with_the_reference(recipe):
    """With BF16 gradients the backward GEMMs hold their result in BF16 before the mask and inverse rotation, in the
    reference (``grad_gemm_dtype``) as in the lowering (the FP8 GEMM writes BF16): the two agree as closely as in FP32
    (quartet: rotation and mask after the BF16 result; mxfp4-rtn: neither)."""
    from fp4compile.reference.linear import grad_gemm_dtype

    assert grad_gemm_dtype(torch.bfloat16) == torch.bfloat16 and grad_gemm_dtype(torch.float32) == torch.float32
    torch.manual_seed(1)
    t, k, n = 96, 128, 64
    x = torch.randn(t, k, device=DEV).bfloat16()
    w = (torch.randn(n, k, device=DEV) / k**0.5).bfloat16()
    e = torch.randn(t, n, device=DEV).bfloat16()
    seed = torch.tensor(78, dtype=torch.int64)
    forms = {p.operand: p.form.value for p in plan_linear(get_recipe(recipe), "triton", DEV) if p.gemm == "output"}
    *_, dx_r, dw_r = run_linear_ops(x, w, e, recipe, seed, "reference", "packed", "packed", torch.bfloat16)
    *_, dx_t, dw_t = run_linear_ops(x, w, e, recipe, seed, "triton", forms["input"], forms["weight"], torch.bfloat16)
    assert dx_t.dtype == dw_t.dtype == torch.bfloat16
    sq = {"grad_input": sqnr_db(dx_t.float(), dx_r.float()), "grad_weight": sqnr_db(dw_t.float(), dw_r.float())}
    print(recipe, {key: round(v, 1) for key, v in sq.items()})
    assert min(sq.values()) > FLOORS[recipe]


def test_epilogue_fallback_equals_the_kernel():
    """Widths the epilogue kernel does not take (not a multiple of 32) run the same steps in torch: alpha
    (device or host), mask, inverse rotation, cast."""
    from fp4compile import formats
    from fp4compile.kernels.rotate_quantize import prepare_rotation
    from fp4compile.lowering import triton_ops
    from fp4compile.rotations import parse_rotation

    torch.manual_seed(3)
    rot = parse_rotation("hadamard-16")
    inverse = prepare_rotation(rot, 0, torch.device(DEV), inverse=True)
    acc = torch.randn(24, 96, device=DEV)
    mask = formats.pack_bits(torch.rand(24, 96) < 0.8).to(DEV)
    for alpha in (torch.tensor(0.75, device=DEV), torch.tensor(1.5)):  # on the device / on the host
        expected = ((acc * alpha.to(DEV)) * formats.unpack_bits(mask.cpu()).to(DEV)).cpu()
        expected = rot.undo(expected).to(torch.bfloat16)
        kernel = triton_ops._epilogue(acc, alpha, mask, inverse, torch.bfloat16).cpu()
        assert (kernel.float() - expected.float()).abs().max() <= 2**-7 * expected.float().abs().max()
        narrow = triton_ops._epilogue(acc[:, :80], alpha, None, None, torch.bfloat16).cpu()  # 80: the torch path
        assert torch.equal(narrow, (acc[:, :80].cpu() * alpha.cpu()).to(torch.bfloat16))


def test_rotation_matrices_formed_on_the_device_equal_the_reference():
    """Random rotations are formed on the device from the seed (a DeviceSeed never leaves it) by one kernel
    launch: M and M^T are the reference's matrices for the same seed value (every size, fresh seeds, device
    and int seeds), new for a new seed; fixed ones are cached once."""
    from fp4compile.kernels.rotate_quantize import prepare_rotation
    from fp4compile.rotations import parse_rotation
    from fp4compile.seeds import DeviceSeed, sub_seed

    dev = torch.device(DEV)
    for size, value in zip((16, 32, 128), torch.randint(0, 2**62, (3,)).tolist(), strict=True):
        rot = parse_rotation(f"random_hadamard-{size}")
        base = DeviceSeed(torch.tensor([value], dtype=torch.int64, device=dev))
        seed = sub_seed(base, "rotation", "backward")
        expected = rot.matrix(sub_seed(value, "rotation", "backward"))
        for s in (seed, sub_seed(value, "rotation", "backward")):
            m, m_t = prepare_rotation(rot, s, dev), prepare_rotation(rot, s, dev, inverse=True)
            assert torch.equal(m.h.cpu().float() * m.scale, expected), size  # +-1 entries times float32 1/sqrt(G)
            assert torch.equal(m_t.h.cpu().float() * m_t.scale, expected.t()), size
        assert not torch.equal(prepare_rotation(rot, sub_seed(base, "other"), dev).h.cpu(), m.h.cpu())
    fixed = parse_rotation("hadamard-32")
    assert prepare_rotation(fixed, None, dev).h is prepare_rotation(fixed, 7, dev).h
    assert prepare_rotation(parse_rotation("none"), 5, dev) is None


@pytest.mark.parametrize("recipe", ["quartet", "quartet2"])
def test_backward_ops_take_a_fused_layers_parts(recipe):
    """grad_input / grad_weight given E as column blocks (a fused layer's parts' gradients) return what they return for
    the concatenated E, bit for bit: the kernels write each block into its slice of the same operands (NVFP4's tensor
    scale taken over every block)."""
    ops = torch.ops.fp4compile
    torch.manual_seed(0)
    t, k, widths = 64, 64, (64, 32, 96)
    x, w = torch.randn(t, k, device=DEV), torch.randn(sum(widths), k, device=DEV) / k**0.5
    parts = [torch.randn(t, n, device=DEV) * (i + 1) for i, n in enumerate(widths)]
    seed = torch.tensor(5, dtype=torch.int64)
    xq = ops.quantize(x, recipe, "input", seed, 0, "triton", "packed")
    wq = ops.quantize(w, recipe, "weight", seed, 0, "triton", "packed")
    x_mask, w_mask = (q[3] if q[3].numel() else None for q in (xq, wq))
    results = []
    for grad in (parts, [torch.cat(parts, dim=1)]):
        results.append((ops.grad_input(grad, *wq[:3], w, x_mask, k, recipe, seed, torch.float32, "triton"),
                        ops.grad_weight(grad, *xq[:3], x, w_mask, k, recipe, seed, torch.float32, "triton")))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
