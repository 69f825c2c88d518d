"""The quantized tensor: what every quantizer returns and every FP4 GEMM consumes.

A quantized tensor ``q`` of a float tensor ``x [..., K]`` (quantized along its last dimension, after
its rotation if it has one) holds

* ``codes``        uint8 ``[..., K/2]``: packed E2M1 codes (element 2i in the low nibble);
* ``scales``       uint8 ``[..., K/group]``: one E8M0 (MXFP4) or E4M3 (NVFP4) byte per group;
* ``tensor_scale`` float32 scalar: the FP32 per-tensor *decode* scale of NVFP4 (1.0 for MXFP4);
* ``factor``       a Python float that multiplies every element on decode (4/3 for the Tseng 3/4
                   rule; a GEMM of two such operands is multiplied by 16/9 after accumulation);
* ``mask``         bool ``[..., K]`` or None: the QuEST trust mask (element was not clipped).

Decoding is ``e2m1(code) * scale(group) * (tensor_scale * factor)``. The product of an E2M1 value and
an E8M0/E4M3 scale is exact in float32; the tensor scale and factor are what a GEMM applies in its
epilogue (``alpha``), so they are kept apart in :meth:`block_values`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from fp4compile import formats


class ScaleFormat(str, Enum):
    E8M0 = "e8m0"
    E4M3 = "e4m3"


@dataclass
class QuantizedTensor:
    codes: torch.Tensor
    scales: torch.Tensor
    scale_format: ScaleFormat
    group_size: int
    tensor_scale: torch.Tensor
    factor: float = 1.0
    mask: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.codes.shape[:-1], self.codes.shape[-1] * 2))

    def decoded_scales(self) -> torch.Tensor:
        if self.scale_format is ScaleFormat.E8M0:
            return formats.e8m0_decode(self.scales)
        return formats.e4m3_decode(self.scales)

    def block_values(self) -> torch.Tensor:
        """``e2m1 * group scale`` in float32 (exact): the operand a block-scaled GEMM multiplies."""
        values = formats.e2m1_decode(formats.unpack_e2m1(self.codes))
        scale = self.decoded_scales().repeat_interleave(self.group_size, dim=-1)
        return values * scale

    @property
    def alpha(self) -> torch.Tensor:
        """The epilogue factor of this operand: ``tensor_scale * factor`` (float32 scalar)."""
        return self.tensor_scale.float() * self.factor

    def dequantize(self) -> torch.Tensor:
        """Float32 values, still in the rotated domain if the quantizer's input was rotated."""
        return self.block_values() * self.alpha

    def nbytes(self) -> int:
        """Bytes a saved copy takes (codes, scales, tensor scale, and the mask at one bit per element)."""
        mask_bytes = 0 if self.mask is None else self.mask.numel() // 8
        return self.codes.numel() + self.scales.numel() + 4 + mask_bytes


@dataclass
class GemmValues:
    """A quantized operand in the form a Hopper tensor core multiplies, with exactly the same values.

    * ``values``    ``[M, K]``: float8_e4m3fn (MXFP4 folded: ``q * 2^(e_g - E_r + 6)``) or bfloat16 (NVFP4:
                    ``q * s8``, exact);
    * ``row_scale`` float32 ``[M, 1]`` (``2^(E_r - 6)``) for the FP8 form, None for BF16;
    * ``alpha``     float32 scalar: ``tensor_scale * factor``, applied after the GEMM (a 0-dim CPU tensor for
                    MXFP4, whose tensor scale is 1; on the device for NVFP4).

    ``values * row_scale`` equals :meth:`QuantizedTensor.block_values` of the same quantization (for FP8:
    in every group within 14 binades of its row's largest; lowering/hopper_gemm.py counts the others).
    """

    values: torch.Tensor
    row_scale: torch.Tensor | None
    alpha: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def block_values(self) -> torch.Tensor:
        v = self.values.float()
        return v if self.row_scale is None else v * self.row_scale
