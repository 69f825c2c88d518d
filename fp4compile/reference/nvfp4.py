"""NVFP4 reference quantizers: E2M1 elements, one E4M3 scale per 16 elements, one FP32 tensor scale.

All take float32 ``x [..., K]`` (K a multiple of 16), already rotated if the recipe rotates, and
quantize along the last dimension. With ``val_max`` (the grid value a group's amax maps to) and
``scales_max`` (the E4M3 value the tensor's amax maps to), numerics.md section 1.3:

    s32  = amax(x) / (scales_max * val_max)                      (1 if amax is 0)
    s8_g = RN_E4M3(amax_g / val_max / s32)                       (1 if it rounds to 0)
    q_i  = ROUND_sat(x_i / (s8_g * s32))          decode: e2m1(q_i) * s8_g * s32

* ``rtn``:      val_max 6, scales_max 448, RTN (the NVIDIA recipe).
* ``4over6``:   per group try val_max 6 and 4 (same s32, scales_max 256), keep the lower squared error
                (ties keep 6) (Cook et al. 2025).
* ``sr``:       val_max 6*16/17, scales_max 448, stochastic rounding: the 16/17 guarantees no clipping
                after E4M3 rounding, so it is unbiased (Quartet II section 3.1).
* ``ms_eden``:  RTN with val_max 6*16/17/0.93 and scales_max 256 (clipping allowed), then per
                correction group S = <x, x> / <x, x_hat> and s8 <- SR_E4M3(S * s8): unbiased over the
                random rotation and the scale rounding (Quartet II Alg. 1). The paper and its CUDA
                kernels correct per 16 elements (our default); the Triton code of the paper's runs
                corrected per 128 (``correction_group=128``, numerics.md section 8.3).
* ``rtn_16x16``: RTN with one scale per 16x16 tile (NVIDIA's weights), so the quantized tensor is
                also a valid quantization of its transpose. Scales are stored per row.

The tensor amax is taken over finite values only, so a NaN or Inf only poisons its own group: that
group's scale is NaN (byte 0x7F) and it decodes to NaN.
"""

from __future__ import annotations

import torch

from fp4compile import formats
from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.seeds import scale_seed, uniforms

GROUP = 16
SR_VAL_MAX = 6.0 * 16.0 / 17.0
EDEN_VAL_MAX = 6.0 * 16.0 / 17.0 / 0.93
E4M3_ONE = 0x38  # byte of 1.0


def _const(value: float, device: torch.device) -> torch.Tensor:
    """A float32 scalar tensor: dividing by it is a true division on every device (CUDA divides by a
    Python scalar as a multiplication by its reciprocal, which rounds differently)."""
    return torch.tensor(value, dtype=torch.float32, device=device)


def _groups(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % GROUP:
        raise ValueError(f"NVFP4 quantizes groups of {GROUP} along the last dimension, which has {x.shape[-1]} elements")
    return x.float().unflatten(-1, (-1, GROUP))  # [..., K/16, 16]


def tensor_scale(x: torch.Tensor, scales_max: float, val_max: float) -> torch.Tensor:
    """FP32 decode scale ``amax / (scales_max * val_max)`` over finite values (1 for an all-zero x)."""
    finite_abs = torch.where(torch.isfinite(x), x.float().abs(), torch.zeros((), device=x.device))
    amax = finite_abs.amax() if x.numel() else torch.zeros((), device=x.device)
    s32 = amax / _const(scales_max * val_max, x.device)
    return torch.where(amax > 0, s32, torch.ones_like(s32)).float()


def group_scale_bytes(amax_g: torch.Tensor, s32: torch.Tensor, val_max: float) -> torch.Tensor:
    """RN_E4M3(amax_g / val_max / s32); 0 -> 1.0; non-finite amax_g -> NaN (0x7F)."""
    byte = formats.e4m3_encode_rn((amax_g / _const(val_max, amax_g.device)) / s32)
    byte = torch.where(byte == 0, E4M3_ONE, byte)
    return torch.where(torch.isfinite(amax_g), byte, formats.E4M3_NAN_BYTE).to(torch.uint8)


def _scaled(xg: torch.Tensor, byte: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
    return xg / (formats.e4m3_decode(byte) * s32)[..., None]


def _finish(byte: torch.Tensor, codes: torch.Tensor, s32: torch.Tensor) -> QuantizedTensor:
    return QuantizedTensor(
        codes=formats.pack_e2m1(codes.flatten(-2)),
        scales=byte,
        scale_format=ScaleFormat.E4M3,
        group_size=GROUP,
        tensor_scale=s32,
    )


def quantize_rtn(x: torch.Tensor, seed: int | None = None, val_max: float = 6.0, scales_max: float = 448.0) -> QuantizedTensor:
    """NVFP4 with round-to-nearest (``val_max`` may exceed 6: then the group max clips)."""
    xg = _groups(x)
    s32 = tensor_scale(x, scales_max, val_max)
    byte = group_scale_bytes(xg.abs().amax(-1), s32, val_max)
    return _finish(byte, formats.e2m1_encode_rtn(_scaled(xg, byte, s32)), s32)


def quantize_4over6(x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
    """NVFP4 RTN with per-group choice between the scales amax_g/6 and amax_g/4 (lower SSE wins)."""
    xg = _groups(x)
    s32 = tensor_scale(x, 256.0, 6.0)
    amax_g = xg.abs().amax(-1)
    candidates = []
    for val_max in (6.0, 4.0):
        byte = group_scale_bytes(amax_g, s32, val_max)
        codes = formats.e2m1_encode_rtn(_scaled(xg, byte, s32))
        deq = formats.e2m1_decode(codes) * (formats.e4m3_decode(byte) * s32)[..., None]
        candidates.append((byte, codes, ((xg - deq) ** 2).sum(-1)))
    (b6, c6, e6), (b4, c4, e4) = candidates
    pick4 = e4 < e6
    byte = torch.where(pick4, b4, b6)
    codes = torch.where(pick4[..., None], c4, c6)
    return _finish(byte, codes, s32)


def quantize_sr(x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
    """Non-clipping NVFP4 with stochastic rounding (val_max 6*16/17): unbiased."""
    if seed is None:
        raise ValueError("stochastic rounding needs a seed")
    xg = _groups(x)
    s32 = tensor_scale(x, 448.0, SR_VAL_MAX)
    byte = group_scale_bytes(xg.abs().amax(-1), s32, SR_VAL_MAX)
    scaled = _scaled(xg, byte, s32)
    return _finish(byte, formats.e2m1_encode_sr(scaled, uniforms(scaled.shape, seed, scaled.device)), s32)


def quantize_ms_eden(x: torch.Tensor, seed: int | None = None, correction_group: int = GROUP) -> QuantizedTensor:
    """MS-EDEN: clipping RTN (val_max 6*16/17/0.93, scales_max 256) + stochastic scale correction."""
    if seed is None:
        raise ValueError("MS-EDEN rounds its scales stochastically: it needs a seed")
    if correction_group % GROUP:
        raise ValueError(f"MS-EDEN's correction group must be a multiple of {GROUP}, got {correction_group}")
    xg = _groups(x)
    s32 = tensor_scale(x, 256.0, EDEN_VAL_MAX)
    byte = group_scale_bytes(xg.abs().amax(-1), s32, EDEN_VAL_MAX)
    scaled = _scaled(xg, byte, s32)  # x / (s8 * s32), in code units
    codes = formats.e2m1_encode_rtn(scaled)
    q = formats.e2m1_decode(codes)
    # S = <x, x> / <x, x_hat> per correction group; in code units the common factor (s8 s32)^2 cancels.
    per = correction_group // GROUP
    num = (scaled * scaled).sum(-1).unflatten(-1, (-1, per)).sum(-1)
    den = (scaled * q).sum(-1).unflatten(-1, (-1, per)).sum(-1)
    corr = torch.where(den > 0, num / den, torch.ones_like(num)).repeat_interleave(per, dim=-1)
    corrected = formats.e4m3_decode(byte) * corr
    u = uniforms(corrected.shape, scale_seed(seed), corrected.device)
    new_byte = formats.e4m3_encode_sr(corrected, u)
    byte = torch.where(torch.isfinite(corrected), new_byte, formats.E4M3_NAN_BYTE).to(torch.uint8)
    return _finish(byte, codes, s32)


def quantize_rtn_16x16(x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
    """NVFP4 RTN with one E4M3 scale per 16x16 tile (rows padded with zeros to a multiple of 16)."""
    xg = _groups(x)
    rows = xg.reshape(-1, *xg.shape[-2:])  # [R, K/16, 16]
    r = rows.shape[0]
    pad = (-r) % GROUP
    padded = torch.cat([rows, rows.new_zeros(pad, *rows.shape[1:])]) if pad else rows
    tile_amax = padded.abs().unflatten(0, (-1, GROUP)).amax(dim=(1, 3))  # [R/16, K/16]
    amax_rows = tile_amax.repeat_interleave(GROUP, dim=0)[:r].reshape(xg.shape[:-1])
    s32 = tensor_scale(x, 448.0, 6.0)
    byte = group_scale_bytes(amax_rows, s32, 6.0)
    return _finish(byte, formats.e2m1_encode_rtn(_scaled(xg, byte, s32)), s32)
