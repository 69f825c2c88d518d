"""Entry point of the rotate-quantize kernels; imports without Triton (then every call says what is missing).

The kernels and their launcher live in ``rotate_quantize.py``; the reference twins in
``fp4compile.reference.mxfp4`` / ``fp4compile.reference.nvfp4``.
"""

from __future__ import annotations

from fp4compile.kernels import HAS_TRITON, require_triton

if HAS_TRITON:
    from fp4compile.kernels.rotate_quantize import RULES, quantize, quantize_for_gemm, supports
else:  # pragma: no cover - exercised on machines without Triton
    RULES: dict = {}

    def supports(quantizer) -> bool:
        return False

    def quantize(*args, **kwargs):
        require_triton("the Triton quantize kernel")

    def quantize_for_gemm(*args, **kwargs):
        require_triton("the Triton quantize kernel")


__all__ = ["RULES", "quantize", "quantize_for_gemm", "supports"]
