"""Number formats of FP4 training: E2M1 elements, E8M0 and E4M3 scales, packing, scale layouts.

Everything here is exact bit manipulation in plain PyTorch (no Triton), so kernels can be compared
against it bit for bit.

E2M1 (FP4): 1 sign, 2 exponent (bias 1), 1 mantissa bit. Magnitudes of codes 0..7 are
``0, 0.5, 1, 1.5, 2, 3, 4, 6``; codes 8..15 are their negatives (8 is -0). No Inf, no NaN.
Round-to-nearest uses ties-to-even of the *code* (the hardware's ``cvt.rn.satfinite.e2m1x2``):
0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4; magnitudes above 6 saturate to 6.

E8M0 (MX scale): an unsigned power of two, byte = biased exponent (bias 127), 0xFF = NaN, no zero.
MX scale rules *floor* to a power of two (``2**floor(log2 s)``, the FP32 exponent bits). Note that
``tensor.to(torch.float8_e8m0fnu)`` rounds to nearest (3 -> 4): never use it for these rules.

E4M3 (NVFP4 scale, "fn" variant): bias 7, max 448, min normal 2**-6, min subnormal 2**-9, NaN = 0x7F.
Encoded with round-to-nearest-even and saturation at 448 (NaN stays NaN), or stochastically.

Packing: two E2M1 codes per byte, element ``2i`` in the low nibble and ``2i+1`` in the high nibble.

Blocked scale layout (Blackwell block-scaled GEMMs, cuBLAS "1D block scaling factors layout",
https://docs.nvidia.com/cuda/cublas/index.html#d-block-scaling-factors-layout): the scale matrix
``[rows, cols]`` (cols = K / group) is zero-padded to ``rows % 128 == 0`` and ``cols % 4 == 0`` and cut
into 512-byte tiles of 128 rows x 4 columns, tiles ordered ``[row_tile][col_tile]`` (row-major over
tiles). Inside a tile, the byte of (r, c) sits at ``(r % 32) * 16 + (r // 32) * 4 + c``. Hence the flat
index of scale (i, j) is::

    ((i // 128) * (cols_padded // 4) + j // 4) * 512 + (i % 32) * 16 + ((i % 128) // 32) * 4 + j % 4
"""

from __future__ import annotations

import torch

# Magnitudes of E2M1 codes 0..7.
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_NORMAL = 2.0**-6
E4M3_NAN_BYTE = 0x7F
E8M0_NAN_BYTE = 0xFF
E8M0_BIAS = 127

_BLOCK_ROWS = 128
_BLOCK_COLS = 4


def _grid(device: torch.device) -> torch.Tensor:
    return torch.tensor(E2M1_GRID, dtype=torch.float32, device=device)


# ----------------------------------------------------------------------------------------------
# E2M1 elements
# ----------------------------------------------------------------------------------------------


def _magnitude_to_code(mag: torch.Tensor) -> torch.Tensor:
    """Grid magnitude (exactly one of E2M1_GRID) -> code 0..7."""
    # 0, .5, 1, 1.5, 2 -> 2*m ; 3 -> 5 ; 4 -> 6 ; 6 -> 7
    code = torch.where(mag <= 2.0, mag * 2.0, torch.where(mag == 3.0, 5.0, torch.where(mag == 4.0, 6.0, 7.0)))
    return code.to(torch.uint8)


def _with_sign(code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    negative = torch.signbit(x) & ~torch.isnan(x)  # NaN encodes as +6, whatever its sign bit
    return code | (negative.to(torch.uint8) << 3)


def e2m1_encode_rtn(x: torch.Tensor) -> torch.Tensor:
    """Round ``x`` (already divided by its scale) to E2M1 codes, nearest-even, saturating at +-6.

    Returns uint8 codes 0..15 of the same shape. NaN encodes as +6 (E2M1 has no NaN): the scale of
    a group holding a NaN is NaN, which is what carries the NaN to the dequantized value.
    """
    mag = torch.nan_to_num(x.float().abs(), nan=E2M1_MAX).clamp(max=E2M1_MAX)
    # Three uniform sub-grids: step 0.5 on [0, 2), 1 on [2, 4), 2 on [4, 6]. torch.round is
    # half-to-even, and on each sub-grid "even" coincides with the even E2M1 code.
    q = torch.where(mag < 2.0, torch.round(mag * 2.0) * 0.5, torch.where(mag < 4.0, torch.round(mag), torch.round(mag * 0.5) * 2.0))
    return _with_sign(_magnitude_to_code(q), x)


def e2m1_encode_sr(x: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Stochastically round ``x`` to E2M1 codes given ``uniforms`` in [0, 1) of the same shape.

    For ``|x|`` in ``[lo, hi]`` (adjacent grid points, |x| clamped to 6) it picks ``hi`` with
    probability ``(|x| - lo) / (hi - lo)``, i.e. when ``u < p``; the sign is kept. Unbiased for |x| <= 6.
    """
    if uniforms.shape != x.shape:
        raise ValueError(f"e2m1_encode_sr: uniforms shape {tuple(uniforms.shape)} != x shape {tuple(x.shape)}")
    grid = _grid(x.device)
    mag = torch.nan_to_num(x.float().abs(), nan=E2M1_MAX).clamp(max=E2M1_MAX)
    lo_idx = (torch.bucketize(mag, grid, right=True) - 1).clamp(0, 7)
    hi_idx = (lo_idx + 1).clamp(max=7)
    lo, hi = grid[lo_idx], grid[hi_idx]
    p_up = torch.where(hi > lo, (mag - lo) / (hi - lo), torch.zeros_like(mag))
    code = (lo_idx + (uniforms.to(mag.device) < p_up).to(lo_idx.dtype)).to(torch.uint8)
    return _with_sign(code, x)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8 0..15) -> float32 values."""
    grid = _grid(codes.device)
    c = codes.to(torch.int64)
    mag = grid[c & 7]
    return torch.where((c & 8) != 0, -mag, mag)


def pack_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """Pack codes ``[..., K]`` (K even) into bytes ``[..., K/2]``: element 2i low nibble, 2i+1 high."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_e2m1 needs an even last dimension, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_e2m1`: bytes ``[..., K/2]`` -> codes ``[..., K]``."""
    lo = packed & 0xF
    hi = packed >> 4
    return torch.stack([lo, hi], dim=-1).flatten(-2)


# ----------------------------------------------------------------------------------------------
# Bit masks (QuEST trust masks are saved one bit per element)
# ----------------------------------------------------------------------------------------------


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[..., K]`` (K % 8 == 0) -> uint8 ``[..., K/8]``: bit i of byte j is element 8j + i."""
    if mask.shape[-1] % 8:
        raise ValueError(f"pack_bits needs a last dimension divisible by 8, got {mask.shape[-1]}")
    m = mask.to(torch.uint8).unflatten(-1, (-1, 8))
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=mask.device)
    return (m * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_bits`."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).bool().flatten(-2)


# ----------------------------------------------------------------------------------------------
# E8M0 scales
# ----------------------------------------------------------------------------------------------


def e8m0_encode_floor(s: torch.Tensor) -> torch.Tensor:
    """Positive float32 scale -> E8M0 byte of ``2**floor(log2 s)`` (the FP32 exponent field).

    Zero and FP32 subnormals give byte 0 (2**-127); NaN, Inf and negative inputs give 0xFF (NaN).
    """
    s = s.float()
    byte = (s.view(torch.int32) >> 23) & 0xFF
    bad = ~torch.isfinite(s) | (s < 0)
    return torch.where(bad, E8M0_NAN_BYTE, byte).to(torch.uint8)


def e8m0_exponent_floor(s: torch.Tensor) -> torch.Tensor:
    """``floor(log2 s)`` for positive normal float32 ``s`` as int32 (exact, from the exponent bits)."""
    return ((s.float().view(torch.int32) >> 23) & 0xFF) - E8M0_BIAS


def e8m0_decode(byte: torch.Tensor) -> torch.Tensor:
    """E8M0 byte -> float32 ``2**(byte - 127)``; 0xFF -> NaN; byte 0 -> 2**-127 (FP32 subnormal)."""
    b = byte.to(torch.int32)
    bits = torch.where(b == 0, torch.full_like(b, 0x00400000), b << 23)
    value = bits.view(torch.float32)
    return torch.where(b == E8M0_NAN_BYTE, torch.full_like(value, float("nan")), value)


def e8m0_from_exponent(e: torch.Tensor) -> torch.Tensor:
    """Integer exponent -> E8M0 byte, clamped to the representable range [-127, 127]."""
    return (e.to(torch.int32).clamp(-E8M0_BIAS, E8M0_BIAS) + E8M0_BIAS).to(torch.uint8)


# ----------------------------------------------------------------------------------------------
# E4M3 scales
# ----------------------------------------------------------------------------------------------


def e4m3_encode_rn(s: torch.Tensor) -> torch.Tensor:
    """Float32 -> E4M3 byte, round-to-nearest-even, saturating at +-448 (NaN stays NaN, 0x7F)."""
    s = s.float()
    sat = torch.where(torch.isnan(s), s, s.clamp(-E4M3_MAX, E4M3_MAX))
    return sat.to(torch.float8_e4m3fn).view(torch.uint8)


def e4m3_decode(byte: torch.Tensor) -> torch.Tensor:
    """E4M3 byte -> float32 value (exact)."""
    return byte.view(torch.float8_e4m3fn).float()


def e4m3_encode_sr(s: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 -> E4M3 byte, rounded stochastically between its two E4M3 neighbours.

    ``p(up) = (s - down) / (up - down)``, taken when ``u < p``. Values below the smallest normal
    (2**-6) are rounded to nearest instead (the scales there are far below the tensor's largest and
    matter little: Quartet II App. A); values above 448 saturate; NaN stays NaN.
    """
    s = s.float()
    rn = e4m3_encode_rn(s)
    rn_val = e4m3_decode(rn)
    rn_int = rn.to(torch.int32)
    # Neighbour bytes of non-negative E4M3 are byte +- 1 (monotone encoding); 0x7E = 448 is the top.
    other = torch.where(rn_val > s, rn_int - 1, rn_int + 1).clamp(0, 0x7E)
    other_val = e4m3_decode(other.to(torch.uint8))
    down = torch.minimum(rn_val, other_val)
    up = torch.maximum(rn_val, other_val)
    p_up = torch.where(up > down, (s - down) / (up - down), torch.zeros_like(s)).clamp(0.0, 1.0)
    take_up = uniforms.to(s.device) < p_up
    chosen = torch.where(take_up, torch.maximum(rn_int, other), torch.minimum(rn_int, other)).to(torch.uint8)
    keep_rn = ~torch.isfinite(s) | (s < E4M3_MIN_NORMAL) | (s >= E4M3_MAX) | (rn_val == s)
    return torch.where(keep_rn, rn, chosen)


# ----------------------------------------------------------------------------------------------
# Blackwell 128x4 blocked scale layout
# ----------------------------------------------------------------------------------------------


def blocked_shape(rows: int, cols: int) -> tuple[int, int]:
    """Padded (rows, cols) of the blocked layout: rows to a multiple of 128, cols of 4."""
    return -(-rows // _BLOCK_ROWS) * _BLOCK_ROWS, -(-cols // _BLOCK_COLS) * _BLOCK_COLS


def blocked_index(i: torch.Tensor, j: torch.Tensor, cols: int) -> torch.Tensor:
    """Flat position of scale (i, j) in the blocked layout of a matrix with ``cols`` scale columns."""
    _, cols_p = blocked_shape(1, cols)
    tile = (i // 128) * (cols_p // 4) + j // 4
    return tile * 512 + (i % 32) * 16 + ((i % 128) // 32) * 4 + j % 4


def to_blocked(scales: torch.Tensor) -> torch.Tensor:
    """Scales ``[rows, cols]`` (one byte each) -> flat blocked layout of ``rows_p * cols_p`` bytes.

    Padding is zero-filled. See the module docstring for the index formula.
    """
    if scales.dim() != 2:
        raise ValueError(f"to_blocked takes a 2-D scale matrix [rows, K/group], got shape {tuple(scales.shape)}")
    rows, cols = scales.shape
    rows_p, cols_p = blocked_shape(rows, cols)
    padded = scales.new_zeros(rows_p, cols_p)
    padded[:rows, :cols] = scales
    # [rt, 4 (r//32 within tile), 32 (r%32), ct, 4 (c)] -> [rt, ct, 32, 4, 4]
    tiles = padded.view(rows_p // 128, 4, 32, cols_p // 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(-1)


def from_blocked(blocked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`to_blocked`: flat blocked bytes -> ``[rows, cols]`` (padding dropped)."""
    rows_p, cols_p = blocked_shape(rows, cols)
    if blocked.numel() != rows_p * cols_p:
        raise ValueError(
            f"from_blocked: {blocked.numel()} bytes do not hold a {rows}x{cols} scale matrix "
            f"(its blocked layout has {rows_p}x{cols_p} = {rows_p * cols_p} bytes)"
        )
    tiles = blocked.reshape(rows_p // 128, cols_p // 4, 32, 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(rows_p, cols_p)[:rows, :cols]
