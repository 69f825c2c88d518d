"""Reproducible randomness for stochastic quantizers and random rotations, drawable without the host.

Seeds are 63-bit integers. A linear layer's seed for one training step is ``step_seed(base, site, step) =
key(base, site) + step * STRIDE``: an affine function of the step, so that a counter on the device can form
it without the host (what lets a CUDA graph replay draw fresh randomness every step). The seeds of the
operands of one step are ``sub_seed(seed, *names) = seed ^ salt(names)``, with the salt a host constant.

Two kinds of draw:

* random rotation signs (``random_signs``) come from a counter-based 32-bit integer hash of the seed's low
  31 bits and the element index, written with int64 torch ops: the same bits on the CPU, on the GPU, from
  an int seed or from a :class:`DeviceSeed`, and in the Triton lowering (which builds its matrices with
  this very function), so the reference and the kernels rotate identically;
* stochastic-rounding uniforms (``uniforms``): element i (row-major) of the rounded tensor gets the top 24
  bits of the same hash of (seed, i) over 2^24, so the reference and the Triton kernels (which form it per
  element in registers, ~10 integer operations where Philox took ~50) draw the same uniforms, bit for bit;
  MS-EDEN's scale draws use the key ``seed ^ SCALE_SALT``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import NamedTuple

import torch

_MASK63 = (1 << 63) - 1
_MASK62 = (1 << 62) - 1
_MASK32 = (1 << 32) - 1
KEY_BITS = 0x7FFFFFFF  # the kernels' Philox key and the sign hash use a seed's low 31 bits
SCALE_SALT = 0x2F6B1D35  # < 2^31: the key of MS-EDEN's scale draws is seed ^ SCALE_SALT
STEP_STRIDE = 0x2545F491  # odd, < 2^31: step * STRIDE stays below 2^62 for 2^31 steps, distinct low bits


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of ints and strings; stable across processes and versions."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & _MASK63


def step_key(base_seed: int, site: str) -> int:
    """The seed of step 0 of one call site (62 bits, so that ``key + step * STRIDE`` fits 63)."""
    return derive_seed(base_seed, site) & _MASK62


def step_seed(base_seed: int, site: str, step: int) -> int:
    """The seed of call ``step`` of one linear layer (``step = -1``: calls without gradients)."""
    return (step_key(base_seed, site) + step * STEP_STRIDE) & _MASK63


@functools.lru_cache(maxsize=256)
def salt(*names: str) -> int:
    """The host constant that ``sub_seed`` mixes in for ``names``."""
    return derive_seed("salt", *names) & _MASK62


class DeviceSeed(NamedTuple):
    """A seed whose value lives on the device: ``base ^ salt``, ``base`` an int64 tensor of one element.

    What the Triton lowering passes around, so that no seed is read on the host (a sync, and a value that
    a CUDA graph replay would freeze). ``salt`` accumulates ``sub_seed``'s host constants.
    """

    base: torch.Tensor
    salt: int = 0

    def item(self) -> int:
        """The seed as an int (reads the device: a host sync)."""
        return int(self.base.reshape(()).item()) ^ self.salt


Seed = int | DeviceSeed


def sub_seed(seed: Seed, *names: str) -> Seed:
    """The seed of one named draw of a step: ``seed ^ salt(names)`` (a DeviceSeed stays one)."""
    s = salt(*(str(n) for n in names))
    if isinstance(seed, DeviceSeed):
        return DeviceSeed(seed.base, seed.salt ^ s)
    return int(seed) ^ s


def host_seed(seed: Seed) -> int:
    """An int seed (a DeviceSeed is read back: a host sync; only the reference and plug-ins need it)."""
    return seed.item() if isinstance(seed, DeviceSeed) else int(seed)


def hash32(key: torch.Tensor | int, index: torch.Tensor) -> torch.Tensor:
    """32 hashed bits (int64 in [0, 2^32)) of ``(key, index)``, ``key`` < 2^31 and ``index`` < 2^31.

    A multiply-xorshift finaliser in int64 arithmetic whose products stay below 2^63 (no overflow), so
    every backend computes the same bits. kernels/ and the Triton lowering rely on this exact function.
    """
    x = (index.to(torch.int64) * 0x9E3779B1 + key) & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x346CA68B) & _MASK32
    return x ^ (x >> 16)


def _key(seed: Seed, device: torch.device | str) -> torch.Tensor | int:
    if isinstance(seed, DeviceSeed):
        return (seed.base.reshape(()).to(device) & KEY_BITS) ^ (seed.salt & KEY_BITS)
    return int(seed) & KEY_BITS


def random_signs(n: int, seed: Seed, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` float32 values in {-1, +1}, each with probability 1/2, from ``seed`` (no host sync for a DeviceSeed)."""
    bits = hash32(_key(seed, device), torch.arange(n, device=device)) >> 31  # the top bit: the best mixed
    return (1 - 2 * bits).to(torch.float32)


def uniforms(shape: tuple[int, ...] | torch.Size, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 uniforms in [0, 1) of ``shape``: element i (row-major) is ``(hash32(seed & KEY_BITS, i) >> 8) / 2^24``.

    Counter-based, so the kernels draw the very same value for element (r, k) of an [R, K] tensor
    (i = r * K + k) without reading this tensor. Fewer than 2^31 elements.
    """
    n = math.prod(shape)
    if n >= 1 << 31:
        raise ValueError(f"uniforms: {n} elements; the counter-based draw indexes fewer than 2^31")
    bits = hash32(int(seed) & KEY_BITS, torch.arange(n, device=device))
    return ((bits >> 8).to(torch.float32) * 2.0**-24).reshape(tuple(shape))


def scale_seed(seed: int) -> int:
    """The seed of MS-EDEN's stochastic scale rounding, given the operand's seed (a kernel forms it on the device)."""
    return int(seed) ^ SCALE_SALT
