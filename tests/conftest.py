"""Shared test fixtures and hardware gates.

``gpu`` tests need CUDA and skip cleanly without it; everything else runs on the CPU.
"""

from __future__ import annotations

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
