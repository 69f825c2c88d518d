"""The quantizer registry: every quantizer a recipe can name, built-in or registered by a user.

A quantizer is a reference function ``fn(x, seed) -> QuantizedTensor`` that quantizes float32
``x [..., K]`` along its last dimension (the rotation, if any, has already been applied by the
caller), plus what the rest of the system must know about it without running it: its group size,
scale format, decode factor, the rotation it is meant to be used with on its own, and whether it is
stochastic. Optional ``kernels`` map a kernel target (``"triton"``, ...) to a faster implementation
with the same contract. The built-ins below are registered through the same API a plug-in uses.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.reference import mxfp4, nvfp4
from fp4compile.rotations import NO_ROTATION, Rotation, RotationKind, parse_rotation
from fp4compile.seeds import derive_seed

QuantizeFn = Callable[[torch.Tensor, "int | None"], QuantizedTensor]


@dataclass(frozen=True)
class Quantizer:
    """A named quantizer: reference function plus the facts the compiler plans with."""

    name: str
    fn: QuantizeFn
    group_size: int
    scale_format: ScaleFormat
    factor: float = 1.0
    rotation: Rotation = NO_ROTATION
    stochastic: bool = False
    unbiased: bool = False
    has_mask: bool = False
    description: str = ""
    kernels: Mapping[str, Callable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str) or any(c.isspace() for c in self.name):
            raise ValueError(f"a quantizer needs a non-empty name without spaces, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"quantizer {self.name!r}: fn must be callable as fn(x, seed) -> QuantizedTensor")
        if not isinstance(self.group_size, int) or self.group_size <= 0 or self.group_size % 2:
            raise ValueError(f"quantizer {self.name!r}: group_size must be a positive even integer, got {self.group_size!r}")
        object.__setattr__(self, "scale_format", ScaleFormat(self.scale_format))
        object.__setattr__(self, "rotation", parse_rotation(self.rotation))
        object.__setattr__(self, "kernels", MappingProxyType(dict(self.kernels)))
        if self.factor <= 0:
            raise ValueError(f"quantizer {self.name!r}: factor must be positive, got {self.factor}")

    def quantize(self, x: torch.Tensor, seed: int | None = None) -> QuantizedTensor:
        """Run the reference along the last dimension of an already-rotated ``x`` and check its output."""
        self.check_dim(x.shape[-1])
        q = self.fn(x.float(), seed)
        if not isinstance(q, QuantizedTensor):
            raise TypeError(f"quantizer {self.name!r} returned {type(q).__name__}, not a QuantizedTensor")
        if q.shape != x.shape or q.group_size != self.group_size or q.scale_format is not self.scale_format:
            raise ValueError(
                f"quantizer {self.name!r} returned shape {tuple(q.shape)}, group {q.group_size}, scales "
                f"{q.scale_format.value}; it is registered for shape {tuple(x.shape)}, group {self.group_size}, "
                f"scales {self.scale_format.value}"
            )
        return q

    def check_dim(self, dim: int, what: str = "the last dimension") -> None:
        if dim % self.group_size:
            raise ValueError(
                f"quantizer {self.name!r} scales groups of {self.group_size} elements, but {what} has {dim} "
                f"(not a multiple of {self.group_size}); pad it or keep this tensor in high precision"
            )


_REGISTRY: dict[str, Quantizer] = {}


def register_quantizer(name: str, quantizer: Quantizer | QuantizeFn | None = None, *, replace: bool = False, **facts) -> Quantizer:
    """Make a quantizer usable in recipes under ``name``.

    Pass a :class:`Quantizer`, or a reference function plus its facts as keywords
    (``group_size=``, ``scale_format=``, ...). Registering an existing name is an error unless
    ``replace=True``.
    """
    if isinstance(quantizer, Quantizer):
        if facts:
            raise TypeError("pass either a Quantizer or a function with keyword facts, not both")
        if quantizer.name != name:
            quantizer = Quantizer(**{**quantizer.__dict__, "name": name})
    elif callable(quantizer):
        quantizer = Quantizer(name=name, fn=quantizer, **facts)
    else:
        raise TypeError(f"register_quantizer({name!r}, ...) takes a Quantizer or a function fn(x, seed) -> QuantizedTensor")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not quantizer:
        raise ValueError(f"a quantizer named {name!r} is already registered; pass replace=True to override it")
    _REGISTRY[name] = quantizer
    return quantizer


def get_quantizer(name: str | Quantizer) -> Quantizer:
    if isinstance(name, Quantizer):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[0]}*") if isinstance(name, str) and name else []
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown quantizer {name!r}{hint}; known quantizers: {', '.join(sorted(_REGISTRY))}") from None


def quantizers() -> list[str]:
    """Names of every registered quantizer."""
    return sorted(_REGISTRY)


def rotation_seed(seed: int) -> int:
    return derive_seed(seed, "rotation")


def rounding_seed(seed: int) -> int:
    return derive_seed(seed, "rounding")


def fake_quantize(x: torch.Tensor, name: str | Quantizer, seed: int = 0) -> torch.Tensor:
    """Quantize ``x`` along its last dimension with quantizer ``name``, dequantize, undo the rotation.

    Returns a tensor of ``x``'s shape and dtype: the value an FP4 GEMM sees, mapped back to ``x``'s
    domain. Quantizers that rotate take their random signs from ``seed``; stochastic ones their
    uniforms, so equal seeds give equal results and the unbiased ones average to ``x`` over seeds.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"fake_quantize takes a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dim() == 0:
        raise ValueError("fake_quantize needs at least one dimension to group along")
    q = get_quantizer(name)
    q.rotation.check_dim(x.shape[-1])
    rseed = rotation_seed(seed)
    quantized = q.quantize(q.rotation.apply(x, rseed), rounding_seed(seed))
    return q.rotation.undo(quantized.dequantize(), rseed).to(x.dtype)


_H32 = Rotation(RotationKind.HADAMARD, 32)
_RHT128 = Rotation(RotationKind.RANDOM_HADAMARD, 128)
_E8M0, _E4M3 = ScaleFormat.E8M0, ScaleFormat.E4M3

for _q in (
    Quantizer("mxfp4_rtn", mxfp4.quantize_rtn, 32, _E8M0, description="OCP MXFP4: scale 2^(floor(log2 amax)-2), RTN"),
    Quantizer("mxfp4_quest", mxfp4.quantize_quest, 32, _E8M0, rotation=_H32, has_mask=True,
              description="Hadamard-32 + QuEST: scale 2^floor(log2(0.487 std)), RTN, trust mask"),
    Quantizer("mxfp4_tseng_rtn", mxfp4.quantize_tseng, 32, _E8M0, factor=4 / 3,
              description="3/4 absmax (never clips), RTN, 16/9 after the GEMM"),
    Quantizer("mxfp4_tseng_sr", mxfp4.quantize_tseng_sr, 32, _E8M0, factor=4 / 3, stochastic=True, unbiased=True,
              description="3/4 absmax (never clips), stochastic rounding, 16/9 after the GEMM"),
    Quantizer("nvfp4_rtn", nvfp4.quantize_rtn, 16, _E4M3, description="NVFP4 1x16: E4M3 scale amax/6, FP32 tensor scale, RTN"),
    Quantizer("nvfp4_rtn_16x16", nvfp4.quantize_rtn_16x16, 16, _E4M3,
              description="NVFP4 with one scale per 16x16 tile (NVIDIA's weights; valid for the transpose)"),
    Quantizer("nvfp4_4over6", nvfp4.quantize_4over6, 16, _E4M3, description="NVFP4 RTN choosing amax/6 or amax/4 per group"),
    Quantizer("nvfp4_sr", nvfp4.quantize_sr, 16, _E4M3, stochastic=True, unbiased=True,
              description="NVFP4 non-clipping (16/17) stochastic rounding"),
    Quantizer("nvfp4_ms_eden", nvfp4.quantize_ms_eden, 16, _E4M3, rotation=_RHT128, stochastic=True, unbiased=True,
              description="RHT-128 + MS-EDEN: clipping RTN at 6.07, per-16 correction, SR of the scale"),
):
    register_quantizer(_q.name, _q)
