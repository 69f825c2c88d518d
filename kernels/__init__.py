"""GPU kernels, each with a plain-PyTorch reference twin (installed as ``fp4compile.kernels``).

``HAS_TRITON`` says whether Triton is importable. Without it, ``fp4compile.kernels.quantize`` still
imports and every entry point raises an error that says what is missing, so CPU-only installs work.
"""

from __future__ import annotations

import importlib.util

HAS_TRITON = importlib.util.find_spec("triton") is not None


def require_triton(what: str) -> None:
    if not HAS_TRITON:
        raise RuntimeError(f"{what} needs the triton package (pip install triton); use kernels='reference'")
