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
    count = torch.zeros(1, dtype=torch.int64, device=DEV)
    a8, row_scale = fold_mxfp4_fp8(q.codes.to(DEV), q.scales.to(DEV), counter=count)
    r8, r_row_scale, n_unfoldable = hg.fold_mxfp4_fp8(q.codes, q.scales)
    assert torch.equal(a8.view(torch.uint8).cpu(), r8.view(torch.uint8))
    assert torch.equal(row_scale.cpu(), r_row_scale)
    assert count.item() == n_unfoldable > 0


@pytest.mark.parametrize("tile", [(16, 256, 4), (64, 128, 8), (8, 64, 2)])
def test_fold_kernel_tile_is_a_speed_choice_only(tile):
    """Every tile (benchmarks' sweeps: bench_kernels.py --fold) writes the same bytes, row scales and count as the twin."""
    from fp4compile.kernels.fold import fold_mxfp4_fp8

    q = f4.get_quantizer("mxfp4_tseng_rtn").quantize(_data())
    count = torch.zeros(1, dtype=torch.int64, device=DEV)
    a8, row_scale = fold_mxfp4_fp8(q.codes.to(DEV), q.scales.to(DEV), counter=count, tile=tile)
    r8, r_row_scale, n_unfoldable = hg.fold_mxfp4_fp8(q.codes, q.scales)
    assert torch.equal(a8.view(torch.uint8).cpu(), r8.view(torch.uint8)) and torch.equal(row_scale.cpu(), r_row_scale)
    assert count.item() == n_unfoldable > 0
    with pytest.raises(ValueError, match="must divide K"):
        fold_mxfp4_fp8(q.codes.to(DEV), q.scales.to(DEV), tile=(32, 96, 4))


def test_fold_kernel_crafted_groups():
    """Groups a quantizer rarely writes: far below E_r with and without a nonzero code (only the first counts as
    unfoldable), scale byte 0 with nonzero codes (not live for E_r, but unfoldable: its values fold to 0), a NaN
    scale, every code of both signs, -0, and a row with no nonzero code (row scale 1). The count equals the twin's."""
    from fp4compile.kernels.fold import fold_mxfp4_fp8

    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(0, 256, (4, 8 * 16), dtype=torch.uint8, generator=gen)  # 4 rows x 8 groups of 32
    scales = torch.randint(100, 140, (4, 8), dtype=torch.uint8, generator=gen)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8) * 0x11  # group 0: codes 0..15 in both nibbles, -0 (8) included
    scales[0, 0] = 140  # the row's E_r
    scales[0, 1], scales[0, 2] = 140 - 20, 140 - 25  # 20 / 25 binades below: rounded (or 0) and counted...
    codes[0, 32:48] = 0x88  # ...unless every code is zero (+-0): group 2 is not counted
    scales[1, 3] = 0  # 2^-127 with nonzero codes: not live for E_r
    scales[2, 5] = 255  # NaN group
    codes[3], scales[3] = 0, 127  # no nonzero code: row scale 1
    count = torch.zeros(1, dtype=torch.int64, device=DEV)
    a8, row_scale = fold_mxfp4_fp8(codes.to(DEV), scales.to(DEV), counter=count)
    r8, r_row_scale, n = hg.fold_mxfp4_fp8(codes, scales)
    assert torch.equal(a8.view(torch.uint8).cpu(), r8.view(torch.uint8))
    assert torch.equal(row_scale.cpu(), r_row_scale) and r_row_scale[3, 0] == 1.0
    assert count.item() == n > 0


@pytest.mark.parametrize("name", ["nvfp4_rtn", "nvfp4_4over6", "nvfp4_ms_eden"])
def test_nvfp4_bf16_kernel_matches_torch_twin(name):
    from fp4compile.kernels.fold import block_values_bf16

    q = f4.get_quantizer(name).quantize(_data(), 1)
    got = block_values_bf16(q.codes.to(DEV), q.scales.to(DEV), 16, e8m0=False).cpu()
    ref = hg.nvfp4_to_bf16(q.codes, q.scales)
    assert torch.equal(got.isnan(), ref.isnan()) and got.isnan().any()  # NaN payloads may differ
    finite = ~ref.isnan()
    assert torch.equal(got[finite].view(torch.int16), ref[finite].view(torch.int16))


@pytest.mark.parametrize("name", ["mxfp4_quest", "mxfp4_tseng_rtn"])
def test_mxfp4_bf16_kernel_matches_block_values(name):
    from fp4compile.kernels.fold import block_values_bf16

    q = f4.get_quantizer(name).quantize(_data(), 1)
    got = block_values_bf16(q.codes.to(DEV), q.scales.to(DEV), 32, e8m0=True).cpu()
    ref = q.block_values()  # float32, exact; exact in bf16 too
    assert torch.equal(got.isnan(), ref.isnan()) and got.isnan().any()
    finite = ~ref.isnan()
    assert torch.equal(got[finite].float(), ref[finite]) and torch.equal(got[finite].view(torch.int16), ref[finite].bfloat16().view(torch.int16))


@pytest.mark.parametrize("tile", [None, (16, 64, 2), (64, 256, 8)], ids=str)
@pytest.mark.parametrize("with_mask,rotation", [(True, "hadamard-32"), (False, "hadamard-32"), (True, None)])
def test_epilogue_kernel_matches_torch(with_mask, rotation, tile):
    """Fused mask + inverse rotation + cast equals the torch composition (up to FP32 summation order), on the
    default tile and others (programs cover other slices of the rows)."""
    from fp4compile import formats
    from fp4compile.kernels.epilogue import mask_rotate_cast
    from fp4compile.kernels.rotate_quantize import Tile
    from fp4compile.rotations import parse_rotation

    g = torch.randn(40, 256)
    mask = torch.rand(40, 256) < 0.9
    rot = None if rotation is None else parse_rotation(rotation)
    expected = g * mask if with_mask else g
    expected = (expected if rot is None else rot.undo(expected)).to(torch.bfloat16)
    got = mask_rotate_cast(g.to(DEV), formats.pack_bits(mask).to(DEV) if with_mask else None,
                           None if rot is None else rot.matrix(None).t(), torch.bfloat16, tile=None if tile is None else Tile(*tile)).cpu()
    assert (got.float() - expected.float()).abs().max() <= 2**-7 * expected.float().abs().max()


@pytest.mark.parametrize("tile", [None, (32, 128, 4)], ids=["butterfly", "matmul"])
def test_epilogue_reads_a_bf16_gemm_result_as_its_float32_value(tile):
    """A backward GEMM writes BF16 for a BF16 gradient (``reference.linear.grad_gemm_dtype``): both epilogue kernels read
    it as it is and give, bit for bit, what they give for the same values in float32."""
    from fp4compile import formats
    from fp4compile.kernels.epilogue import mask_rotate_cast
    from fp4compile.kernels.rotate_quantize import Tile, prepare_rotation
    from fp4compile.rotations import parse_rotation

    inverse = prepare_rotation(parse_rotation("hadamard-32"), None, torch.device(DEV), inverse=True)
    g = (torch.randn(40, 288) * torch.logspace(-3, 3, 288)[torch.randperm(288)]).bfloat16()
    bits = formats.pack_bits(torch.rand(40, 288) < 0.9).to(DEV)
    t = None if tile is None else Tile(*tile)
    got = mask_rotate_cast(g.to(DEV), bits, inverse, torch.bfloat16, tile=t).cpu()
    want = mask_rotate_cast(g.float().to(DEV), bits, inverse, torch.bfloat16, tile=t).cpu()
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)) and (got != 0).any()


@pytest.mark.parametrize("with_mask,with_alpha", [(True, False), (False, True), (True, True)])
def test_epilogue_butterfly_equals_the_matmul_rotation(with_mask, with_alpha):
    """The fixed Hadamard-32 epilogue (``epilogue_h32_kernel``: a butterfly in registers, which prepare_rotation's fixed
    Hadamard selects) equals the torch composition and the tensor-core kernel (given a tile) to FP32 summation order, on
    fresh data over six decades, rows whose (row, group) pairs do not fill the last program, alpha and the mask."""
    from fp4compile import formats
    from fp4compile.kernels.epilogue import mask_rotate_cast
    from fp4compile.kernels.rotate_quantize import Tile, is_fixed_hadamard, prepare_rotation
    from fp4compile.rotations import parse_rotation

    rot = parse_rotation("hadamard-32")
    inverse = prepare_rotation(rot, None, torch.device(DEV), inverse=True)
    assert is_fixed_hadamard(inverse) and not is_fixed_hadamard(prepare_rotation(parse_rotation("random_hadamard-32"), 3, torch.device(DEV)))
    g = torch.randn(40, 288) * torch.logspace(-3, 3, 288)[torch.randperm(288)]  # 40 x 9 pairs: 3 programs, the last part-full
    mask = torch.rand(40, 288) < 0.9
    alpha = torch.tensor(0.37) if with_alpha else None
    expected = g * alpha if with_alpha else g
    expected = rot.undo(expected * mask if with_mask else expected).float()
    bits = formats.pack_bits(mask).to(DEV) if with_mask else None
    a = alpha.to(DEV) if with_alpha else None
    fly = mask_rotate_cast(g.to(DEV), bits, inverse, torch.float32, alpha=a).cpu()
    mm = mask_rotate_cast(g.to(DEV), bits, inverse, torch.float32, alpha=a, tile=Tile(32, 128, 4)).cpu()  # a tile: the matmul kernel
    scale = expected.abs().amax(dim=-1, keepdim=True)
    assert ((fly - expected).abs() / scale).max() < 1e-5 and ((fly - mm).abs() / scale).max() < 1e-5
    if not with_mask:
        assert (fly != 0).all()


# ------------------------------------------------------------------------------------------------
# The quantize kernel writing the GEMM-ready form directly (kernels/rotate_quantize.quantize_for_gemm)
# ------------------------------------------------------------------------------------------------

FUSED = [  # (quantizer, rotation, source): forward X, backward E / E^T / Xq^T of the recipes
    ("mxfp4_quest", "hadamard-32", "dense"),
    ("mxfp4_tseng_rtn", "random_hadamard-32", "transposed"),
    ("mxfp4_tseng_rtn", "random_hadamard-32", "packed:mxfp4_quest"),
    ("mxfp4_rtn", None, "dense"),
    ("mxfp4_rtn", None, "transposed"),  # these two caught Triton's fp32 -> fp8 conversion misplacing bytes on sm_90
    ("mxfp4_tseng_sr", "random_hadamard-32", "dense"),  # the kernel's own uniforms: same seed, same draws
    ("nvfp4_4over6", None, "dense"),
    ("nvfp4_rtn", None, "transposed"),
    ("nvfp4_rtn_16x16", None, "dense"),
    ("nvfp4_ms_eden", "random_hadamard-128", "packed:nvfp4_4over6"),
]


def _source(kind: str, x: torch.Tensor):
    if kind == "dense":
        return x.to(DEV)
    if kind == "transposed":
        return x.t().contiguous().to(DEV).t()  # a strided view: the kernel reads it along the other axis
    q = f4.get_quantizer(kind.split(":")[1]).quantize(x.t().contiguous(), 2)  # [K, R], read transposed
    return type(q)(q.codes.to(DEV), q.scales.to(DEV), q.scale_format, q.group_size, q.tensor_scale.to(DEV), q.factor)


@pytest.mark.parametrize("name,rotation,source", FUSED)
def test_quantize_for_gemm_equals_twin_of_its_packed_output(name, rotation, source):
    """One launch writes packed + values; the values equal the torch twin's conversion of the packed output
    (FP8 bytes, row scales and unfoldable count; BF16 bits), which itself equals the reference quantizer."""
    from fp4compile.kernels.quantize import quantize_for_gemm
    from fp4compile.rotations import parse_rotation

    x = torch.randn(64, 256) * torch.logspace(-6, 6, 256)[None, :]  # some groups fall out of the FP8 window
    x[7] = 0.0
    m = None if rotation is None else parse_rotation(rotation).matrix(11)
    q = f4.get_quantizer(name)
    form = "fp8" if q.scale_format.value == "e8m0" else "bf16"
    hg.reset_fold_stats()
    values, packed, _ = quantize_for_gemm(_source(source, x), q, m, 9, form=form, keep_packed=True)
    codes, scales = packed.codes.cpu(), packed.scales.cpu()
    assert torch.equal(values.alpha.cpu(), (packed.tensor_scale * packed.factor).cpu())
    if form == "fp8":
        r8, row_scale, n = hg.fold_mxfp4_fp8(codes, scales)
        assert torch.equal(values.values.view(torch.uint8).cpu(), r8.view(torch.uint8))
        assert torch.equal(values.row_scale.cpu(), row_scale)
        assert hg.fold_stats()["unfoldable_groups"] == 2 * n  # the kernel's count, then the twin's
        assert n > 0 or source != "dense"  # dense rows span 12 decades: some groups do not fold
    else:
        ref = hg.nvfp4_to_bf16(codes, scales)
        assert values.row_scale is None
        assert torch.equal(values.values.cpu().view(torch.int16), ref.view(torch.int16))
    alone, _, _ = quantize_for_gemm(_source(source, x), q, m, 9, form=form)  # values only: the same bytes
    assert torch.equal(alone.values.view(torch.uint8 if form == "fp8" else torch.int16).cpu(),
                       values.values.view(torch.uint8 if form == "fp8" else torch.int16).cpu())


def test_quantize_for_gemm_fp8_of_an_empty_input():
    """No rows: neither the quantize nor the fold kernel runs a program, and the shapes are the usual ones."""
    from fp4compile.kernels.quantize import quantize_for_gemm

    values, packed, mask = quantize_for_gemm(torch.randn(0, 256).to(DEV), f4.get_quantizer("mxfp4_quest"), None, 0, form="fp8", keep_packed=True)
    assert values.values.shape == (0, 256) and values.row_scale.shape == (0, 1) and packed.codes.shape == (0, 128) and mask.shape == (0, 32)


def test_quantize_for_gemm_rejects_a_form_of_the_other_format():
    from fp4compile.kernels.quantize import quantize_for_gemm

    with pytest.raises(ValueError, match="e8m0"):
        quantize_for_gemm(torch.randn(32, 64, device=DEV), f4.get_quantizer("nvfp4_rtn"), None, 0, form="fp8")
    with pytest.raises(ValueError, match="form must be"):
        quantize_for_gemm(torch.randn(32, 64, device=DEV), f4.get_quantizer("nvfp4_rtn"), None, 0, form="fp6")
