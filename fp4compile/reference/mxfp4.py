"""MXFP4 reference quantizers: E2M1 elements with one E8M0 (power-of-two) scale per 32 elements.

All take float32 ``x [..., K]`` (K a multiple of 32), already rotated if the recipe rotates, and
quantize along the last dimension. Scale rules (numerics.md section 1.2):

* ``rtn`` (OCP):  e = floor(log2 amax_g) - 2, scale 2**e, q = RN_sat(x / 2**e). The block max lands in
  [4, 8): values in (6, 8) saturate (the clipping bias of naive MXFP4).
* ``quest``:      s = 2**floor(log2(0.48707976 * std_g + 1e-8 * p_g)), q = RN_sat(x / s), mask =
  |x / s| < 6. std_g is the centered population std of the group; 0.48707976 = 2.92247856 / 6 (the
  MSE-optimal clip for N(0, 1) on the E2M1 grid). The paper's code adds an absolute 1e-8 to guard
  log2(0); we scale it by p_g = 2**floor(log2 amax_g) so that groups of magnitude 1e-30 keep their
  scale (for groups of magnitude ~1 the two agree). std is computed on x / p_g (exact) to avoid
  overflow at 1e30.
* ``tseng`` (3/4 absmax): e = floor(log2 amax_g), stored scale 2**(e-2), q = ROUND(0.75 x / 2**(e-2))
  in [-6, 6) (never clips), decode factor 4/3 (a GEMM of two such operands is scaled by 16/9).
  ROUND is RTN or stochastic rounding.

Non-finite groups: amax is NaN or Inf -> scale byte 0xFF (NaN), so the whole group decodes to NaN.
"""

from __future__ import annotations

import torch

from fp4compile import formats
from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.seeds import uniforms

GROUP = 32
QUEST_SCALE = 0.48707976  # 2.92247856 / 6
QUEST_EPS = 1e-8
TSENG_PRESCALE = 0.75
TSENG_FACTOR = 4.0 / 3.0


def _groups(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % GROUP:
        raise ValueError(f"MXFP4 quantizes groups of {GROUP} along the last dimension, which has {x.shape[-1]} elements")
    return x.float().unflatten(-1, (-1, GROUP))  # [..., K/32, 32]


def _scale_byte(exponent: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(amax), formats.e8m0_from_exponent(exponent), formats.E8M0_NAN_BYTE).to(torch.uint8)


def _finish(xg: torch.Tensor, scale_byte: torch.Tensor, codes: torch.Tensor, factor: float = 1.0, mask=None) -> QuantizedTensor:
    return QuantizedTensor(
        codes=formats.pack_e2m1(codes.flatten(-2)),
        scales=scale_byte,
        scale_format=ScaleFormat.E8M0,
        group_size=GROUP,
        tensor_scale=torch.ones((), dtype=torch.float32, device=xg.device),
        factor=factor,
        mask=None if mask is None else mask.flatten(-2),
    )


def quantize_rtn(x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
    """OCP MXFP4: scale 2**(floor(log2 amax) - 2), round to nearest even, saturate at 6."""
    xg = _groups(x)
    amax = xg.abs().amax(-1)
    byte = _scale_byte(formats.e8m0_exponent_floor(amax) - 2, amax)
    scaled = xg / formats.e8m0_decode(byte)[..., None]
    return _finish(xg, byte, formats.e2m1_encode_rtn(scaled))


def quantize_quest(x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
    """QuEST MXFP4 (Quartet forward): std-based power-of-two scale, RTN, trust mask."""
    xg = _groups(x)
    amax = xg.abs().amax(-1)
    p = torch.where(amax > 0, formats.e8m0_decode(formats.e8m0_encode_floor(amax)), torch.zeros_like(amax))
    safe_p = torch.where(p > 0, p, torch.ones_like(p))[..., None]
    std = (xg / safe_p).std(dim=-1, correction=0) * p  # centered population std, no overflow
    s = QUEST_SCALE * std + QUEST_EPS * p
    byte = torch.where(torch.isfinite(amax), formats.e8m0_encode_floor(s), formats.E8M0_NAN_BYTE).to(torch.uint8)
    scaled = xg / formats.e8m0_decode(byte)[..., None]
    mask = scaled.abs() < formats.E2M1_MAX
    return _finish(xg, byte, formats.e2m1_encode_rtn(scaled), mask=mask)


def quantize_tseng(x: torch.Tensor, seed: int | None = None, stochastic: bool = False) -> QuantizedTensor:
    """AbsMax with 3/4 (Tseng et al.): never clips; decode factor 4/3; RTN or stochastic rounding."""
    xg = _groups(x)
    amax = xg.abs().amax(-1)
    byte = _scale_byte(formats.e8m0_exponent_floor(amax) - 2, amax)
    scaled = (xg * TSENG_PRESCALE) / formats.e8m0_decode(byte)[..., None]
    if stochastic:
        if seed is None:
            raise ValueError("stochastic rounding needs a seed")
        codes = formats.e2m1_encode_sr(scaled, uniforms(scaled.shape, seed, scaled.device))
    else:
        codes = formats.e2m1_encode_rtn(scaled)
    return _finish(xg, byte, codes, factor=TSENG_FACTOR)


def quantize_tseng_sr(x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
    return quantize_tseng(x, seed, stochastic=True)
