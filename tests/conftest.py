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
