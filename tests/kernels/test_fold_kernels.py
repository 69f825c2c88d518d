"""Claims about the Triton operand-conversion kernels (kernels/fold.py) against their torch twins in
lowering/hopper_gemm.py, on the GPU or under TRITON_INTERPRET=1: the FP8 folding of MXFP4 (bytes of a8,
the row exponents, the unfoldable-group count) and the BF16 values of NVFP4 are identical, on real
quantizer outputs spanning 1e-8..1e8 within rows (so some groups fall out of the 14-binade window),
NaN groups, zero rows and odd row counts.
"""

from __future__ import annotations

import pytest
import torch

import fp4compile as f4
from fp4compile.lowering import hopper_gemm as hg
from tests.conftest import kernel_device, requires_triton

pytestmark = requires_triton
DEV = kernel_device()


def _data() -> torch.Tensor:
    x = torch.randn(37, 256) * torch.logspace(-8, 8, 256)[None, :]
    x[3] = 0.0
    x[5, 70] = float("nan")
    return x


@pytest.mark.parametrize("name", ["mxfp4_quest", "mxfp4_tseng_rtn", "mxfp4_rtn"])
def test_fold_kernel_matches_torch_twin(name):
    from fp4compile.kernels.fold import fold_mxfp4_fp8

    q = f4.get_quantizer(name).quantize(_data())
    a8, e_r, count = fold_mxfp4_fp8(q.codes.to(DEV), q.scales.to(DEV))
    r8, row_scale, n_unfoldable = hg.fold_mxfp4_fp8(q.codes, q.scales)
    assert torch.equal(a8.view(torch.uint8).cpu(), r8.view(torch.uint8))
    assert torch.equal(hg._pow2(e_r.cpu() - hg.FP8_HEADROOM), row_scale)
    assert count.item() == n_unfoldable > 0


@pytest.mark.parametrize("name", ["nvfp4_rtn", "nvfp4_4over6", "nvfp4_ms_eden"])
def test_nvfp4_bf16_kernel_matches_torch_twin(name):
    from fp4compile.kernels.fold import nvfp4_to_bf16

    q = f4.get_quantizer(name).quantize(_data(), 1)
    got = nvfp4_to_bf16(q.codes.to(DEV), q.scales.to(DEV)).cpu()
    ref = hg.nvfp4_to_bf16(q.codes, q.scales)
    assert torch.equal(got.isnan(), ref.isnan()) and got.isnan().any()  # NaN payloads may differ
    finite = ~ref.isnan()
    assert torch.equal(got[finite].view(torch.int16), ref[finite].view(torch.int16))


@pytest.mark.parametrize("with_mask,rotation", [(True, "hadamard-32"), (False, "hadamard-32"), (True, None)])
def test_epilogue_kernel_matches_torch(with_mask, rotation):
    """Fused mask + inverse rotation + cast equals the torch composition (up to FP32 summation order)."""
    from fp4compile import formats
    from fp4compile.kernels.epilogue import mask_rotate_cast
    from fp4compile.rotations import parse_rotation

    g = torch.randn(40, 256)
    mask = torch.rand(40, 256) < 0.9
    rot = None if rotation is None else parse_rotation(rotation)
    expected = g * mask if with_mask else g
    expected = (expected if rot is None else rot.undo(expected)).to(torch.bfloat16)
    got = mask_rotate_cast(g.to(DEV), formats.pack_bits(mask).to(DEV) if with_mask else None,
                           None if rot is None else rot.matrix(None).t(), torch.bfloat16).cpu()
    assert (got.float() - expected.float()).abs().max() <= 2**-7 * expected.float().abs().max()
