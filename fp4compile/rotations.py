"""Block rotations applied along the last dimension before quantizing: fixed and random-sign Hadamard.

A rotation of size ``g`` multiplies each consecutive block of ``g`` elements of a row by an orthogonal
``g x g`` matrix ``M`` (row-vector convention, ``x_rot = x @ M``):

* ``hadamard``: ``M = H_g``, the Sylvester Hadamard matrix scaled to be orthonormal (+-1/sqrt(g));
* ``random_hadamard``: ``M = D @ H_g`` with ``D = diag(signs)`` drawn from a seed, i.e. the signs are
  applied *before* the Hadamard (a proper randomized Hadamard transform; the Quartet repository applied
  them after, which makes the randomization ineffective: numerics.md section 3.4).

Two GEMM operands rotated along their shared inner dimension by the same ``M`` keep their product:
``(A M)(B M)^T = A B^T``. Undoing a rotation is ``x_rot @ M^T``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

import torch

from fp4compile.seeds import random_signs


class RotationKind(str, Enum):
    NONE = "none"
    HADAMARD = "hadamard"
    RANDOM_HADAMARD = "random_hadamard"


@functools.lru_cache(maxsize=16)
def _hadamard_cpu(size: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / size**0.5).to(torch.float32)


def hadamard_matrix(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Orthonormal Sylvester Hadamard matrix ``H_size`` (float32); ``size`` must be a power of two."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a Hadamard rotation needs a power-of-two size, got {size}")
    return _hadamard_cpu(size).to(device)


@dataclass(frozen=True)
class Rotation:
    """A block rotation along the last dimension: ``kind`` and block ``size``."""

    kind: RotationKind = RotationKind.NONE
    size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RotationKind(self.kind))
        if self.kind is RotationKind.NONE:
            if self.size not in (0,):
                raise ValueError("Rotation(kind='none') takes no size; leave size at 0")
        elif self.size < 2 or self.size & (self.size - 1):
            raise ValueError(f"Rotation({self.kind.value!r}) needs a power-of-two block size such as 16, 32 or 128, got {self.size}")

    @property
    def is_identity(self) -> bool:
        return self.kind is RotationKind.NONE

    @property
    def is_random(self) -> bool:
        return self.kind is RotationKind.RANDOM_HADAMARD

    def __str__(self) -> str:
        return "none" if self.is_identity else f"{self.kind.value}-{self.size}"

    def matrix(self, seed: int | None, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``size x size`` orthogonal matrix ``M`` (``D @ H`` for the random kind)."""
        if self.is_identity:
            raise ValueError("the identity rotation has no matrix")
        h = hadamard_matrix(self.size, device)
        if not self.is_random:
            return h
        if seed is None:
            raise ValueError(f"rotation {self} is random: pass a seed")
        return random_signs(self.size, seed, device)[:, None] * h

    def check_dim(self, dim: int, what: str = "the last dimension") -> None:
        if not self.is_identity and dim % self.size:
            raise ValueError(
                f"rotation {self} works on blocks of {self.size} elements, but {what} has {dim} "
                f"(not a multiple of {self.size}); skip this layer or pick a recipe with a smaller rotation"
            )

    def apply(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """``x @ blockdiag(M)`` along the last dimension, computed in float32."""
        return self._blocks(x, seed, inverse=False)

    def undo(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """``x @ blockdiag(M)^T``: the inverse of :meth:`apply` with the same seed."""
        return self._blocks(x, seed, inverse=True)

    def _blocks(self, x: torch.Tensor, seed: int | None, inverse: bool) -> torch.Tensor:
        # (x @ (M / c)) * c with c = float32(1/sqrt(g)): the +-1 sums are exact whenever the inputs are
        # (e.g. dequantized FP4 values), and the scale rounds once; the kernels compute the same.
        if self.is_identity:
            return x.float()
        self.check_dim(x.shape[-1])
        c = torch.tensor(1.0 / self.size**0.5, dtype=torch.float32)
        m = self.matrix(seed, x.device) / c.to(x.device)  # entries exactly +-1
        if inverse:
            m = m.t()
        blocks = x.float().unflatten(-1, (-1, self.size))  # [..., K/g, g]
        return ((blocks @ m) * c.to(x.device)).flatten(-2)


NO_ROTATION = Rotation()


def parse_rotation(text: str | Rotation) -> Rotation:
    """``"none"``, ``"hadamard-32"``, ``"random_hadamard-128"`` -> Rotation."""
    if isinstance(text, Rotation):
        return text
    if text == "none":
        return NO_ROTATION
    kind, _, size = text.rpartition("-")
    try:
        return Rotation(RotationKind(kind), int(size))
    except ValueError as err:
        raise ValueError(
            f"cannot read rotation {text!r}: write 'none', 'hadamard-<size>' or 'random_hadamard-<size>' ({err})"
        ) from None
