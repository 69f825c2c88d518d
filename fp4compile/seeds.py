"""Reproducible randomness for stochastic quantizers and random rotations.

Every random draw of the reference is keyed by an integer seed derived from named parts
(``derive_seed(base, "layers.0.mlp.up", step, "grad_input")``) and drawn from a CPU generator, so that
the same seed gives the same bits on any device, in any process and on every rank of a distributed
job. Kernels that draw counter-based (Philox) uniforms instead are checked statistically against it.
"""

from __future__ import annotations

import hashlib
import threading

import torch

_MASK63 = (1 << 63) - 1


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of ints and strings; stable across processes and versions."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & _MASK63


_LOCAL = threading.local()


def _generator(seed: int) -> torch.Generator:
    """This thread's CPU generator, re-seeded (as fresh as a new one, without the cost of making one)."""
    gen = getattr(_LOCAL, "generator", None)
    if gen is None:
        gen = _LOCAL.generator = torch.Generator(device="cpu")
    return gen.manual_seed(int(seed) & _MASK63)


def uniforms(shape: tuple[int, ...] | torch.Size, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 uniforms in [0, 1) of ``shape``, drawn on the CPU from ``seed`` and moved to ``device``."""
    return torch.rand(tuple(shape), generator=_generator(seed), dtype=torch.float32).to(device)


def random_signs(n: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` float32 values in {-1, +1}, each with probability 1/2, from ``seed``."""
    bits = torch.randint(0, 2, (n,), generator=_generator(seed), dtype=torch.int64)
    return (1 - 2 * bits).to(torch.float32).to(device)
