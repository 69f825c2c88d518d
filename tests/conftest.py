"""Shared test fixtures and hardware gates.

``gpu`` tests need CUDA and skip cleanly without it; everything else runs on the CPU.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

# Without a GPU, Triton kernels run under its CPU interpreter (set before any kernel module is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
requires_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


def kernel_device() -> str:
    """Where kernel tests run: the GPU if there is one, else the CPU under TRITON_INTERPRET=1."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def sqnr_db(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    reference = reference.double()
    noise = (actual.double() - reference).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


def run_linear_ops(x: torch.Tensor, w: torch.Tensor, e: torch.Tensor, recipe: str, seed: torch.Tensor, kernel: str, x_form: str, w_form: str,
                   dtype: torch.dtype = torch.float32):
    """One linear layer through the fp4compile ops on ``kernel``, as the rewritten graph calls them:
    ``(xq outputs, wq outputs, y, dX, dW)``, results in ``dtype`` (y = X W^T, dX = E W, dW = E^T X)."""
    ops = torch.ops.fp4compile
    k = x.shape[1]
    xq = ops.quantize(x, recipe, "input", seed, 0, kernel, x_form)
    wq = ops.quantize(w, recipe, "weight", seed, 0, kernel, w_form)
    values = (xq[4], xq[5], wq[4], wq[5]) if x_form == w_form != "packed" else ()
    y = ops.output_gemm(*xq[:3], *wq[:3], recipe, dtype, kernel, *values)
    x_mask = xq[3] if xq[3].numel() else None
    w_mask = wq[3] if wq[3].numel() else None
    dx = ops.grad_input([e], *wq[:3], w, x_mask, k, recipe, seed, dtype, kernel)
    dw = ops.grad_weight([e], *xq[:3], x, w_mask, k, recipe, seed, dtype, kernel)
    return xq, wq, y, dx, dw
