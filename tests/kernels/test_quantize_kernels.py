"""Claims about the Triton rotate-quantize kernels (kernels/rotate_quantize.py) against the reference,
on the GPU when there is one, else on the CPU under TRITON_INTERPRET=1 at small sizes:

* Deterministic rules (mxfp4_rtn, mxfp4_quest with Hadamard-32 and its trust mask, mxfp4_tseng_rtn with a
  random Hadamard-32, nvfp4_rtn, nvfp4_4over6, nvfp4_rtn_16x16): codes, scales, tensor scale and mask are bit-exact, on
  odd row counts, transposed reads (X^T along T without a transpose copy), zero-padded lengths, and
  tensors with NaN/Inf, all-zero and all-negative-zero groups and 1e-30 / 1e30 magnitudes. (With a rotation the GPU's tensor-
  core sums may differ from the CPU's in the last bit; on the GPU we then require >= 99.9% equal codes, scales and mask bits
  and tensor-scale differences in the last bit only.)
* Re-quantization from packed FP4 (dequantize, transpose, rotate, quantize) equals the reference's
  composition for Quartet's and Quartet II's backward operands (to the last bit of the rotation's sums:
  the kernel rotates the exact block values and applies the tensor scale after).
* Stochastic rules (mxfp4_tseng_sr, nvfp4_sr, nvfp4_ms_eden with RHT-128) are bit-exact when given the
  reference's uniforms, and with the kernel's own counter-based uniforms they are unbiased (mean over
  seeds -> x, error consistent with the variance alone) and never more than one grid step from RTN.
"""

from __future__ import annotations

import pytest
import torch

import fp4compile as f4
from fp4compile import formats
from fp4compile.rotations import parse_rotation
from fp4compile.seeds import derive_seed, scale_seed, uniforms
from tests.conftest import kernel_device, requires_triton

pytestmark = requires_triton
DEV = kernel_device()
ON_GPU = DEV == "cuda"


def _kernel():
    from fp4compile.kernels.quantize import quantize

    return quantize


def _rot(spec: str | None, seed: int = 3):
    if spec is None:
        return None, None
    r = parse_rotation(spec)
    return r, r.matrix(seed)


def _assert_same(kq, mask, ref, rotated: bool, sums_differ: bool = False):
    """``sums_differ``: the kernel's FP32 sums round differently from the reference's on any device."""
    rotated = rotated and (ON_GPU or sums_differ)
    ts, ts_ref = kq.tensor_scale.cpu().reshape(()), ref.tensor_scale.reshape(()).float()
    if rotated:  # the amax of differently summed rotated values may differ in the last bit
        assert abs(ts - ts_ref) <= 1e-6 * ts_ref
    else:
        assert torch.equal(ts, ts_ref)
    codes_equal = (kq.codes.cpu() == ref.codes)
    scales_equal = (kq.scales.cpu() == ref.scales)
    if rotated:
        assert codes_equal.float().mean() >= 0.999 and scales_equal.float().mean() >= 0.999
    else:
        assert codes_equal.all(), f"{(~codes_equal).sum().item()} codes differ"
        assert scales_equal.all(), f"{(~scales_equal).sum().item()} scales differ"
    if ref.mask is not None:
        assert mask is not None
        same = formats.unpack_bits(mask.cpu()) == ref.mask
        assert same.all() if not rotated else same.float().mean() >= 0.999


CASES = [
    ("mxfp4_rtn", None),
    ("mxfp4_quest", "hadamard-32"),
    ("mxfp4_tseng_rtn", "random_hadamard-32"),
    ("nvfp4_rtn", None),
    ("nvfp4_4over6", None),
    ("nvfp4_rtn", "random_hadamard-16"),
    ("nvfp4_rtn_16x16", None),
]


def _special(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[1, 5] = float("nan")
    x[2, 40] = float("inf")
    x[3, :64] = 0.0
    x[3, 64:80] = -0.0  # a group of negative zeros: code 8 (the sign bit), as the reference's
    x[4] *= 1e-30
    x[5] *= 1e30
    return x


@pytest.mark.parametrize("name,rotation", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("layout", ["rows", "transposed", "padded", "special"])
def test_deterministic_rules_bit_exact(name, rotation, layout):
    q = f4.get_quantizer(name)
    rot, m = _rot(rotation)
    x = torch.randn(37, 256)
    pad_to = 1
    if layout == "special":
        x = _special(x)
    if layout == "padded":
        x = torch.randn(37, 200)
        pad_to = 128
    src = x.t().contiguous() if layout == "transposed" else x  # the kernel reads src^T without a copy
    kq, mask = _kernel()(src.to(DEV), q, m, seed=0, transpose=layout == "transposed", pad_to=pad_to)
    xin = torch.nn.functional.pad(x, (0, (-x.shape[1]) % 128)) if layout == "padded" else x
    ref = q.quantize(xin if rot is None else rot.apply(xin, 3), 0)
    _assert_same(kq, mask, ref, rotated=rot is not None)


def test_division_by_a_shared_reciprocal_is_correctly_rounded():
    """The NVFP4 rules divide each element by its group's scale as ``_div_by(x, d, RN(1/d))`` (one IEEE
    division per group, an FMA correction per element): equal to IEEE float32 x / d for fresh random x over
    80 binades and divisors with random and all-ones significands, signs of x from the caller (-0 -> +0)."""
    from tests.kernels.helper_kernels import divide_kernel

    n = 1 << 16
    x = torch.randn(n) * torch.exp(torch.empty(n).uniform_(-25, 25))
    d = torch.exp(torch.empty(n).uniform_(-20, 20))
    d[::2] = (d[::2].view(torch.int32) | 0x007FFFFF).view(torch.float32)  # significand 1.11...1: the hardest reciprocals
    out = torch.empty(n, device=DEV)
    divide_kernel[(n // 1024,)](x.to(DEV), d.to(DEV), out, BLOCK=1024)
    want = x / d
    normal = want.abs() >= torch.finfo(torch.float32).tiny  # subnormal quotients round to code 0 either way
    assert normal.float().mean() > 0.99
    assert torch.equal(out.cpu()[normal], want[normal])


def test_stochastic_rounding_at_grid_points_and_boundaries_bit_exact():
    """The kernels' E2M1 stochastic rounding (``_sr_code``: steps counted on the sub-grid) picks the reference's
    code for magnitudes on every grid point, one ulp either side, at 6 and 0, subnormal and fresh random ones,
    with uniforms exactly at the probability of rounding up, one ulp below it, 0 and fresh random ones; the
    value it returns is the code's."""
    from tests.kernels.helper_kernels import sr_code_kernel

    grid = formats.e2m1_decode(torch.arange(8, dtype=torch.uint8))
    mids = (grid[:-1] + grid[1:]) / 2
    special = torch.cat([grid, mids, torch.nextafter(grid, torch.full((8,), 9.0)).clamp(max=6.0), torch.nextafter(grid, torch.zeros(8)),
                         torch.tensor([1e-40, 1e-30, 5.999999])])
    n = 4096
    mag = torch.cat([special.repeat(16), torch.empty(n - 16 * len(special)).uniform_(0, 6)])
    lo_idx = (torch.bucketize(mag, grid, right=True) - 1).clamp(0, 7)
    lo, hi = grid[lo_idx], grid[(lo_idx + 1).clamp(max=7)]
    p = torch.where(hi > lo, (mag - lo) / (hi - lo), torch.zeros_like(mag))  # the reference's probability of rounding up
    u = torch.rand(n)
    pick = torch.randint(4, (n,))
    u = torch.where(pick == 0, p, torch.where(pick == 1, torch.nextafter(p, torch.zeros(n)), torch.where(pick == 2, torch.zeros(n), u)))
    code, value = torch.empty(n, dtype=torch.int32, device=DEV), torch.empty(n, device=DEV)
    sr_code_kernel[(n // 512,)](mag.to(DEV), u.to(DEV), code, value, BLOCK=512)
    want = formats.e2m1_encode_sr(mag, u).to(torch.int32)
    assert ((want != lo_idx) & (want != lo_idx + 1)).sum() == 0 and (want != lo_idx).any() and (want == lo_idx).any()  # both ways taken
    assert torch.equal(code.cpu(), want)
    assert torch.equal(value.cpu(), grid[want])


@pytest.mark.parametrize("name", ["nvfp4_rtn", "nvfp4_ms_eden", "mxfp4_quest"])
def test_empty_input_has_the_reference_tensor_scale(name):
    """No rows: no program runs, and the tensor scale (written by the kernel otherwise) is the reference's 1."""
    q = f4.get_quantizer(name)
    _, m = _rot("random_hadamard-128" if name == "nvfp4_ms_eden" else None)
    kq, _ = _kernel()(torch.randn(0, 256).to(DEV), q, m, seed=0)
    ref = q.quantize(torch.randn(0, 256), 0)
    assert kq.codes.shape == ref.codes.shape and torch.equal(kq.tensor_scale.cpu().reshape(()), ref.tensor_scale.reshape(()).float())


def test_rtn_ties_and_neighbours_bit_exact():
    """Scaled values exactly on E2M1 rounding boundaries (ties go to the even code), one ulp either side,
    +-0 and the grid points: the kernel's magic-number rounding and bit-read codes equal the reference's."""
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    vals = torch.cat([ties, torch.nextafter(ties, torch.zeros(7)), torch.nextafter(ties, torch.full((7,), 9.0)),
                      torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])])
    vals = torch.cat([vals, -vals])
    x = vals[torch.randint(len(vals), (16, 64))]
    x[:, ::32] = 6.0  # every group's amax is 6: OCP's scale is 2^(floor(log2 6) - 2) = 1, so scaled = x
    q = f4.get_quantizer("mxfp4_rtn")
    kq, _ = _kernel()(x.to(DEV), q, None, seed=0)
    ref = q.quantize(x, 0)
    assert torch.equal(ref.scales, torch.full_like(ref.scales, 127))  # the premise: unit scales
    _assert_same(kq, None, ref, rotated=False)


@pytest.mark.parametrize("fwd,bwd,rotation", [("mxfp4_quest", "mxfp4_tseng_rtn", "random_hadamard-32"),
                                              ("nvfp4_4over6", "nvfp4_ms_eden", "random_hadamard-128")])
def test_requantize_from_packed(fwd, bwd, rotation):
    """Backward re-quantization of a forward-quantized W [N, K]: W^T [K, N] along N."""
    w = torch.randn(256, 128)
    wq = f4.get_quantizer(fwd).quantize(w)
    rot, m = _rot(rotation)
    q = f4.get_quantizer(bwd)
    on_dev = f4.QuantizedTensor(wq.codes.to(DEV), wq.scales.to(DEV), wq.scale_format, wq.group_size, wq.tensor_scale.to(DEV), wq.factor)
    src = rot.apply(wq.dequantize().t(), 3)
    shape = src.unflatten(-1, (-1, 16)).shape[:-1] if q.stochastic else None
    u = (None, uniforms(shape, scale_seed(9))) if q.stochastic else None
    kq, _ = _kernel()(on_dev, q, m, seed=9, uniforms=u)
    ref = q.quantize(src, 9)
    _assert_same(kq, None, ref, rotated=True, sums_differ=True)  # the kernel applies the tensor scale after rotating


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_requantize_decodes_every_code_and_scale(fmt):
    """The re-quantization forms a saved tensor's values from its packed codes in registers (on the GPU through the FP8
    conversion, ``rotate_quantize._e2m1_signed_values``): every byte of codes (both signs of zero among them) under
    scales from the subnormal end to overflow and NaN groups is decoded as the reference's ``dequantize()``; an unrotated
    re-quantization makes the comparison bit-exact."""
    torch.manual_seed(11)
    rows, cols = 96, 128  # saved [rows, cols], re-quantized along rows
    group = 32 if fmt == "mxfp4" else 16
    codes = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8)
    codes[:4, :] = torch.arange(256, dtype=torch.uint8).reshape(4, 64)  # every byte value appears
    if fmt == "mxfp4":
        scales = torch.randint(100, 155, (rows, cols // group), dtype=torch.uint8)
        scales[:, 0] = torch.tensor([0, 1, 2, 126, 127, 250, 253, 254, 255] * 11)[:rows].to(torch.uint8)  # 2^-127 .. 2^127, NaN
        q, saved = f4.get_quantizer("mxfp4_tseng_rtn"), (f4.ScaleFormat.E8M0, torch.tensor(1.0), 1.0)
    else:
        scales = torch.randint(0x30, 0x50, (rows, cols // group), dtype=torch.uint8)
        scales[:, 0] = torch.tensor([0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0x7F] * 14)[:rows].to(torch.uint8)  # E4M3 0 .. 448, NaN
        q, saved = f4.get_quantizer("nvfp4_rtn"), (f4.ScaleFormat.E4M3, torch.tensor(0.037), 1.0)
    wq = f4.QuantizedTensor(codes, scales, saved[0], group, saved[1], saved[2])
    on_dev = f4.QuantizedTensor(codes.to(DEV), scales.to(DEV), saved[0], group, saved[1].to(DEV), saved[2])
    kq, _ = _kernel()(on_dev, q, None, seed=0)
    src = wq.dequantize().t()
    assert src.isnan().any() and (src == 0).any() and (src.signbit() & (src == 0)).any()
    _assert_same(kq, None, q.quantize(src, 0), rotated=False)


@pytest.mark.parametrize("name,rotation", [("mxfp4_tseng_sr", "random_hadamard-32"), ("nvfp4_sr", None), ("nvfp4_ms_eden", "random_hadamard-128")])
def test_stochastic_rules_with_reference_uniforms(name, rotation):
    q = f4.get_quantizer(name)
    rot, m = _rot(rotation)
    x = torch.randn(32, 256)
    xr = x if rot is None else rot.apply(x, 3)
    if name == "nvfp4_ms_eden":
        u = (None, uniforms((32, 256 // 16), scale_seed(5)))
    else:
        u = (uniforms((32, 256), 5), None)
    kq, _ = _kernel()(x.to(DEV), q, m, seed=5, uniforms=u)
    _assert_same(kq, None, q.quantize(xr, 5), rotated=rot is not None)


@pytest.mark.parametrize("name,layout", [("mxfp4_tseng_sr", "rows"), ("nvfp4_sr", "transposed"), ("nvfp4_ms_eden", "padded")])
def test_stochastic_rules_draw_the_reference_uniforms(name, layout):
    """Without given uniforms the kernel draws seeds.uniforms' counter-based ones itself: bit-exact."""
    q = f4.get_quantizer(name)
    x = torch.randn(37, 200 if layout == "padded" else 256)
    src = x.t().contiguous() if layout == "transposed" else x
    seed = derive_seed("sr", name)
    kq, _ = _kernel()(src.to(DEV), q, None, seed=seed, transpose=layout == "transposed", pad_to=128 if layout == "padded" else 1)
    xin = torch.nn.functional.pad(x, (0, (-x.shape[1]) % 128))
    _assert_same(kq, None, q.quantize(xin, seed), rotated=False)


@pytest.mark.parametrize("name", ["mxfp4_tseng_sr", "nvfp4_sr", "nvfp4_ms_eden"])
def test_stochastic_rules_unbiased_with_kernel_uniforms(name):
    q = f4.get_quantizer(name)
    rot = parse_rotation("random_hadamard-128") if name == "nvfp4_ms_eden" else None
    x = torch.randn(8, 256)
    n = 256

    def sample(s: int) -> torch.Tensor:  # one draw of the rotation (if any) and of the rounding
        m = None if rot is None else rot.matrix(s)
        y = _kernel()(x.to(DEV), q, m, seed=s)[0].dequantize().cpu()
        return y if rot is None else rot.undo(y, s)

    outs = torch.stack([sample(s) for s in range(n)])
    xr = x
    err2 = (outs.mean(0) - x).pow(2).sum().item()
    predicted = (outs.var(0).sum() / n).item()
    print(f"{name}: err/var ratio {err2 / predicted:.2f}")
    assert err2 / predicted < 1.5
    if name != "nvfp4_ms_eden":  # elements stay within one grid step of the RTN result
        rtn = f4.get_quantizer("mxfp4_tseng_rtn" if name.startswith("mx") else "nvfp4_rtn")
        step = (outs[0] - rtn.quantize(xr).dequantize()).abs() / rtn.quantize(xr).decoded_scales().repeat_interleave(q.group_size, -1)
        assert (step <= 2.0 * q.factor + 1e-6).all()


def test_kernel_rejects_unknown_quantizer():
    plugin = f4.Quantizer("test_plugin_rtn", f4.get_quantizer("nvfp4_rtn").fn, 16, "e4m3")  # a plug-in: no kernel rule
    with pytest.raises(NotImplementedError, match="no Triton kernel"):
        _kernel()(torch.randn(4, 32), plugin, None, seed=0)


@pytest.mark.parametrize("name,rotation,layout,form", [("mxfp4_quest", "hadamard-32", "rows", "fp8"),
                                                       ("mxfp4_tseng_rtn", "random_hadamard-32", "transposed", "fp8"),
                                                       ("nvfp4_4over6", None, "rows", "bf16"),
                                                       ("nvfp4_ms_eden", "random_hadamard-128", "rows", "bf16")])
def test_results_do_not_depend_on_the_tile(name, rotation, layout, form):
    """The launcher's tile (default_tile) is a speed choice only: every tile (and programs looping over row blocks, and a register cap) gives the same codes, scales,
    mask, GEMM values and row scales, bit for bit (programs see other slices of the same rows and columns;
    stochastic draws are keyed by element index, the FP8 fold's row exponents reduced over all programs)."""
    from fp4compile.kernels.quantize import quantize_for_gemm
    from fp4compile.kernels.rotate_quantize import Tile

    q = f4.get_quantizer(name)
    _, m = _rot(rotation)
    x = torch.randn(48, 256) * torch.logspace(-3, 3, 256)[torch.randperm(256)]  # six decades, shuffled: groups far below their row's maximum, anywhere
    src = (x.t().contiguous() if layout == "transposed" else x).to(DEV)
    runs = []
    for tile in (None, Tile(16, 64, 2), Tile(32, 128, 4), Tile(64, 64, 4), Tile(64, 128, 16), Tile(16, 128, 4, 2), Tile(64, 64, 4, 1, 96)):
        values, packed, mask = quantize_for_gemm(src, q, m, 11, form=form, keep_packed=True, transpose=layout == "transposed", tile=tile)
        runs.append([t.cpu() for t in (values.values.view(torch.uint8) if form == "fp8" else values.values, packed.codes, packed.scales)]
                    + [t.cpu() for t in (values.row_scale, mask) if t is not None])
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a, b) or (a.dtype.is_floating_point and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))


def test_rtn_16x16_rejects_a_tile_that_splits_its_blocks():
    from fp4compile.kernels.rotate_quantize import Tile

    with pytest.raises(ValueError, match="multiple of 16 rows"):
        _kernel()(torch.randn(32, 64).to(DEV), f4.get_quantizer("nvfp4_rtn_16x16"), None, seed=0, tile=Tile(8, 64, 4))


@pytest.mark.parametrize("tile,field", [((12, 64, 4), "block_r"), ((16, 8, 4), "block_k"), ((16, 64, 3), "num_warps")])
def test_tile_that_is_not_powers_of_two_is_named(tile, field):
    from fp4compile.kernels.rotate_quantize import Tile

    with pytest.raises(ValueError, match=f"{field}=.* must be a power of two"):
        _kernel()(torch.randn(32, 64).to(DEV), f4.get_quantizer("mxfp4_rtn"), None, seed=0, tile=Tile(*tile))


@pytest.mark.parametrize("cap", [16, 256])
def test_tile_register_cap_out_of_range_is_named(cap):
    from fp4compile.kernels.rotate_quantize import Tile

    with pytest.raises(ValueError, match=f"max_registers={cap} must be 0"):
        _kernel()(torch.randn(32, 64).to(DEV), f4.get_quantizer("mxfp4_rtn"), None, seed=0, tile=Tile(64, 64, 4, 1, cap))


def test_tensors_past_int32_offsets_are_refused_with_the_fix():
    """The kernels index with int32 offsets: a tensor past 2^31 - 1 elements gets an error that names the limit and the
    fixes, before anything is allocated or launched (expanded views: no memory behind them)."""
    from fp4compile.kernels.epilogue import mask_rotate_cast
    from fp4compile.kernels.fold import fold_mxfp4_fp8
    from fp4compile.kernels.rotate_quantize import MAX_ELEMENTS

    rows, cols = 1 << 16, (1 << 15) + 128  # 2^31 + 2^23 elements
    assert rows * cols > MAX_ELEMENTS
    calls = [
        lambda: _kernel()(torch.zeros(1, dtype=torch.bfloat16).expand(rows, cols), f4.get_quantizer("mxfp4_rtn"), None, seed=0),
        lambda: mask_rotate_cast(torch.zeros(1).expand(rows, cols), None, None, torch.bfloat16),
        lambda: fold_mxfp4_fp8(torch.zeros(1, dtype=torch.uint8).expand(rows, cols // 2), torch.zeros(1, dtype=torch.uint8).expand(rows, cols // 32)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"int32 offsets.*kernels='reference'"):
            call()
    kq, _ = _kernel()(torch.randn(64, 64).to(DEV), f4.get_quantizer("mxfp4_rtn"), None, seed=0)  # small tensors pass
    assert kq.codes.shape == (64, 32)


def _gemm_bytes(values) -> list[torch.Tensor]:
    """A GEMM operand's tensors as CPU bytes (FP8 / BF16 values and row scales, or Blackwell's codes and blocked scales)."""
    if hasattr(values, "scales_blocked"):
        return [values.data.view(torch.uint8).cpu(), values.scales_blocked.view(torch.uint8).cpu(), values.alpha.reshape(1).cpu()]
    out = [values.values.view(torch.uint8 if values.values.dtype == torch.float8_e4m3fn else torch.int16).cpu()]
    return out + ([values.row_scale.cpu()] if values.row_scale is not None else [])


@pytest.mark.parametrize("name,rotation,form,widths", [
    ("mxfp4_tseng_rtn", "random_hadamard-32", "fp8", (64, 32, 96)),
    ("mxfp4_tseng_sr", "random_hadamard-32", "fp8", (32, 64)),
    ("mxfp4_quest", "hadamard-32", "fp4", (64, 32, 32)),  # Blackwell's blocked scales, each block at its place
    ("nvfp4_sr", None, "bf16", (48, 16)),
    ("nvfp4_ms_eden", "random_hadamard-128", "bf16", (128, 256)),
    ("mxfp4_tseng_rtn", "random_hadamard-32", "fp8", (48, 80)),  # along the rows not on group boundaries: concatenated first
    ("nvfp4_rtn_16x16", None, "bf16", (24, 40)),  # transposed, block rows not on its 16-row tiles: concatenated first
])
@pytest.mark.parametrize("transpose", [False, True], ids=["along_rows", "transposed"])
def test_column_blocks_equal_the_concatenated_tensor(name, rotation, form, widths, transpose):
    """E given as column blocks [T, N_i] (a fused layer's parts' gradients, never concatenated): each block's launch writes
    its slice of one set of outputs, bit-identical to quantizing torch.cat(blocks): codes, scales, mask, GEMM values, row
    scales (the FP8 fold's row exponents reduced over every block), blocked scales, tensor scale; stochastic draws are
    keyed by the element's index in the whole tensor."""
    from fp4compile.kernels.quantize import quantize_for_gemm

    q = f4.get_quantizer(name)
    _, m = _rot(rotation, 5)
    t = 128 if rotation == "random_hadamard-128" else 48
    blocks = [(torch.randn(t, n) * torch.logspace(-2, 2, n)[torch.randperm(n)]).to(DEV) for n in widths]
    whole = torch.cat(blocks, dim=1)
    runs = []
    for src in (blocks, whole):
        values, packed, mask = quantize_for_gemm(src, q, m, 23, form=form, keep_packed=True, transpose=transpose, pad_to=32)
        runs.append(_gemm_bytes(values) + [packed.codes.cpu(), packed.scales.cpu(), packed.tensor_scale.reshape(1).cpu()]
                    + ([mask.cpu()] if mask is not None else []))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_column_blocks_must_share_rows_and_dtype():
    from fp4compile.kernels.quantize import quantize

    q = f4.get_quantizer("mxfp4_rtn")
    with pytest.raises(ValueError, match="equal rows"):
        quantize([torch.randn(8, 32, device=DEV), torch.randn(16, 32, device=DEV)], q, None, 0)
    with pytest.raises(ValueError, match="share a dtype"):
        quantize([torch.randn(8, 32, device=DEV), torch.randn(8, 32, device=DEV).bfloat16()], q, None, 0)
