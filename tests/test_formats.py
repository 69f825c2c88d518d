"""Claims about the number formats (fp4compile.formats), each proved below:

* E2M1: the 16 codes decode to the grid +-{0, .5, 1, 1.5, 2, 3, 4, 6}; RTN is bit-exact against a
  brute-force nearest search with ties to the even code (the hardware's cvt.rn.satfinite), including
  every tie case, and saturates at +-6; SR picks only the two neighbours, with frequency p(up).
* Packing: element 2i in the low nibble, round trips on random codes; bit masks likewise.
* E8M0: the encoder floors to a power of two (bit-exact against frexp), unlike torch's cast, which
  rounds to nearest; NaN/Inf map to 0xFF and decode to NaN.
* E4M3: RN is bit-exact against a brute-force nearest-even search over all codes and saturates at
  448; SR moves only to the two neighbours and is unbiased.
* Blocked 128x4 layout: round trips on odd shapes and every byte sits where the documented formula
  says; padding is zero.
* Rotations: orthogonal for sizes 16/32/128, random signs applied before the Hadamard, reproducible
  by seed, different for different seeds, and undo inverts apply.
"""

from __future__ import annotations

import math

import pytest
import torch

from fp4compile import formats
from fp4compile.rotations import Rotation, RotationKind, hadamard_matrix, parse_rotation

GRID = torch.tensor(formats.E2M1_GRID)


def brute_e2m1(x: torch.Tensor) -> torch.Tensor:
    mag = x.abs().clamp(max=6.0)
    dist = (mag[:, None] - GRID[None, :]).abs()
    best = dist.min(1, keepdim=True).values
    cands = dist == best
    # among tied candidates, prefer the even code (codes are the grid indices)
    even = cands & (torch.arange(8)[None, :] % 2 == 0)
    code = torch.where(even.any(1), even.float().argmax(1), cands.float().argmax(1))
    return code.to(torch.uint8) | (torch.signbit(x).to(torch.uint8) << 3)


def test_e2m1_grid_decode_and_roundtrip():
    codes = torch.arange(16, dtype=torch.uint8)
    values = formats.e2m1_decode(codes)
    assert values[:8].tolist() == list(formats.E2M1_GRID)
    assert values[8:].tolist() == [-v for v in formats.E2M1_GRID]
    assert torch.equal(formats.e2m1_encode_rtn(values), codes)


@pytest.mark.parametrize(
    "value,expected",
    [(0.25, 0.0), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0), (5.01, 6.0), (4.99, 4.0),
     (6.5, 6.0), (1e9, 6.0), (-0.25, -0.0), (-5.0, -4.0), (-7.0, -6.0), (0.2499, 0.0), (0.2501, 0.5)],
)
def test_e2m1_rtn_ties_and_saturation(value, expected):
    got = formats.e2m1_decode(formats.e2m1_encode_rtn(torch.tensor([value])))
    assert got.item() == expected and math.copysign(1, got.item()) == math.copysign(1, expected)


def test_e2m1_rtn_matches_brute_force():
    x = torch.cat([torch.randn(20000) * 3, torch.linspace(-7, 7, 2801), GRID, -GRID, (GRID[1:] + GRID[:-1]) / 2])
    assert torch.equal(formats.e2m1_encode_rtn(x), brute_e2m1(x))


def test_e2m1_sr_neighbours_and_frequency():
    x = torch.full((200000,), 2.25)  # between 2 and 3, p(up) = 0.25
    codes = formats.e2m1_encode_sr(x, torch.rand(x.shape))
    values = formats.e2m1_decode(codes)
    assert set(values.unique().tolist()) == {2.0, 3.0}
    freq = (values == 3.0).float().mean().item()
    assert abs(freq - 0.25) < 5 * math.sqrt(0.25 * 0.75 / x.numel())
    y = torch.randn(100000) * 2
    sr = formats.e2m1_decode(formats.e2m1_encode_sr(y, torch.rand(y.shape)))
    rtn = formats.e2m1_decode(formats.e2m1_encode_rtn(y))
    lo = GRID[(torch.bucketize(y.abs().clamp(max=6), GRID, right=True) - 1).clamp(0, 7)]
    assert ((sr.abs() - lo) >= 0).all() and (sr.abs() <= GRID[(torch.bucketize(lo, GRID) + 1).clamp(max=7)]).all()
    assert ((sr - rtn).abs() <= 2.0).all()


def test_pack_layout_and_roundtrip():
    codes = torch.tensor([[0x1, 0xA, 0x3, 0xF]], dtype=torch.uint8)
    assert formats.pack_e2m1(codes).tolist() == [[0xA1, 0xF3]]
    rnd = torch.randint(0, 16, (37, 64), dtype=torch.uint8)
    assert torch.equal(formats.unpack_e2m1(formats.pack_e2m1(rnd)), rnd)
    with pytest.raises(ValueError, match="even"):
        formats.pack_e2m1(torch.zeros(3, dtype=torch.uint8))


def test_pack_bits_layout_and_roundtrip():
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 0] = mask[0, 9] = True
    assert formats.pack_bits(mask).tolist() == [[1, 2]]
    rnd = torch.rand(5, 256) < 0.5
    assert torch.equal(formats.unpack_bits(formats.pack_bits(rnd)), rnd)


def test_e8m0_floor_bit_exact():
    s = torch.cat([torch.rand(10000) * 1e3, torch.rand(1000) * 1e-30, torch.tensor([1.0, 2.0, 3.0, 0.75, 2.0**-126, 2.0**127])])
    byte = formats.e8m0_encode_floor(s)
    expected = torch.tensor([math.frexp(v)[1] - 1 + 127 for v in s.tolist()], dtype=torch.uint8)
    assert torch.equal(byte, expected)
    decoded = formats.e8m0_decode(byte)
    assert ((decoded <= s) & (s < 2 * decoded)).all()
    # torch's own cast rounds to nearest: 3 -> 4, where the MX floor rule needs 2
    assert torch.tensor([3.0]).to(torch.float8_e8m0fnu).float().item() == 4.0
    assert formats.e8m0_decode(formats.e8m0_encode_floor(torch.tensor([3.0]))).item() == 2.0


def test_e8m0_special_values():
    byte = formats.e8m0_encode_floor(torch.tensor([float("nan"), float("inf"), -1.0, 0.0]))
    assert byte.tolist() == [255, 255, 255, 0]
    assert torch.isnan(formats.e8m0_decode(torch.tensor([255], dtype=torch.uint8))).all()
    assert formats.e8m0_decode(torch.tensor([0], dtype=torch.uint8)).item() == 2.0**-127


def _all_e4m3_positive() -> tuple[torch.Tensor, torch.Tensor]:
    codes = torch.arange(0, 0x7F, dtype=torch.uint8)  # 0 .. 448, 0x7F is NaN
    return codes, formats.e4m3_decode(codes)


def test_e4m3_rn_matches_brute_force():
    codes, values = _all_e4m3_positive()
    mids = (values[1:] + values[:-1]) / 2
    s = torch.cat([torch.rand(20000) * 460, torch.rand(2000) * 0.02, mids, values])
    got = formats.e4m3_encode_rn(s)
    dist = (s.clamp(max=448)[:, None] - values[None, :]).abs()
    best = dist.min(1, keepdim=True).values
    cands = dist == best
    even = cands & (codes[None, :] % 2 == 0)
    expected = torch.where(even.any(1), even.float().argmax(1), cands.float().argmax(1)).to(torch.uint8)
    assert torch.equal(got, expected)
    assert formats.e4m3_encode_rn(torch.tensor([float("nan")])).item() == formats.E4M3_NAN_BYTE


def test_e4m3_sr_neighbours_and_unbiased():
    s = torch.full((100000,), 1.03)  # between 1.0 and 1.125
    got = formats.e4m3_decode(formats.e4m3_encode_sr(s, torch.rand(s.shape)))
    assert set(got.unique().tolist()) == {1.0, 1.125}
    p = 0.03 / 0.125
    assert abs(got.mean().item() - 1.03) < 5 * 0.125 * math.sqrt(p * (1 - p) / s.numel())
    exact = torch.tensor([1.0, 448.0, 500.0])
    assert formats.e4m3_decode(formats.e4m3_encode_sr(exact, torch.zeros(3))).tolist() == [1.0, 448.0, 448.0]


@pytest.mark.parametrize("rows,cols", [(63, 1023), (300, 9), (133, 512), (1, 1), (128, 4), (256, 8)], ids=lambda v: str(v))
def test_blocked_layout_roundtrip_and_formula(rows, cols):
    scales = torch.randint(1, 256, (rows, cols), dtype=torch.uint8)
    blocked = formats.to_blocked(scales)
    rows_p, cols_p = formats.blocked_shape(rows, cols)
    assert blocked.numel() == rows_p * cols_p and rows_p % 128 == 0 and cols_p % 4 == 0
    assert torch.equal(formats.from_blocked(blocked, rows, cols), scales)
    i, j = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    assert torch.equal(blocked[formats.blocked_index(i, j, cols)], scales)
    filled = torch.zeros(blocked.numel(), dtype=torch.bool)
    filled[formats.blocked_index(i, j, cols).flatten()] = True
    assert (blocked[~filled] == 0).all()


@pytest.mark.parametrize("size", [16, 32, 128])
@pytest.mark.parametrize("kind", [RotationKind.HADAMARD, RotationKind.RANDOM_HADAMARD])
def test_rotations_orthogonal_and_seeded(kind, size):
    rot = Rotation(kind, size)
    m = rot.matrix(seed=7)
    assert torch.allclose(m @ m.t(), torch.eye(size), atol=1e-6)
    x = torch.randn(5, size * 3)
    assert torch.allclose(rot.undo(rot.apply(x, 7), 7), x, atol=1e-5)
    assert torch.equal(rot.apply(x, 7), rot.apply(x, 7))
    if kind is RotationKind.RANDOM_HADAMARD:
        assert not torch.equal(rot.matrix(seed=7), rot.matrix(seed=8))
        signs = torch.sign(m[:, 0] / hadamard_matrix(size)[:, 0])
        assert torch.allclose(m, signs[:, None] * hadamard_matrix(size))  # signs first: x D H


def test_rotation_errors_and_parsing():
    assert parse_rotation("random_hadamard-128") == Rotation(RotationKind.RANDOM_HADAMARD, 128)
    assert parse_rotation("none").is_identity
    with pytest.raises(ValueError, match="power-of-two"):
        Rotation(RotationKind.HADAMARD, 24)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        Rotation(RotationKind.HADAMARD, 32).apply(torch.randn(2, 48))
    with pytest.raises(ValueError, match="cannot read rotation"):
        parse_rotation("hadamard-x")
