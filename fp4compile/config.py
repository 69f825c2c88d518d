"""Recipes: which quantizer each operand of each GEMM of a linear layer gets, and how they connect.

A linear layer ``y = x W^T`` (x ``[T, K]`` tokens x in-features, W ``[N, K]``) runs three GEMMs, each
``a @ b^T`` with both operands quantized along the shared inner dimension:

    output:       y  = X   @ W^T      a = input   [T, K],  b = weight  [N, K],  inner K
    grad_input:   dX = E   @ W        a = grad_output [T, N], b = W^T  [K, N],  inner N
    grad_weight:  dW = E^T @ X        a = E^T     [N, T],  b = X^T     [K, T],  inner T

(E = dL/dy.) A :class:`GemmRecipe` names the two quantizers of one GEMM (None keeps that operand in
high precision) and the block rotation applied to both along the inner dimension, which cancels in the
product. A :class:`Recipe` adds how the backward reads W and X: the forward-quantized tensors
(``quantized``, the papers' re-quantization; in the forward's rotated domain, so the gradients are
rotated back) or the saved high-precision ones, and whether the forward quantizers' trust masks
(QuEST) gate the gradients (straight-through estimator with clipping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from fp4compile.quantizers import get_quantizer
from fp4compile.rotations import NO_ROTATION, Rotation, RotationKind, parse_rotation


class Gemm(str, Enum):
    OUTPUT = "output"
    GRAD_INPUT = "grad_input"
    GRAD_WEIGHT = "grad_weight"


class Source(str, Enum):
    """Where a backward GEMM reads W or X from."""

    QUANTIZED = "quantized"  # the forward-quantized tensor, dequantized (then re-quantized if asked)
    HIGH_PRECISION = "high_precision"  # the original tensor, saved in the model's dtype


@dataclass(frozen=True)
class GemmRecipe:
    """One GEMM ``a @ b^T``: a quantizer per operand (None = high precision) and the inner rotation."""

    a: str | None = None
    b: str | None = None
    rotation: Rotation = NO_ROTATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotation", parse_rotation(self.rotation))
        for q in (self.a, self.b):
            if q is not None:
                get_quantizer(q)  # unknown names fail here, listing the known ones

    @property
    def quantized(self) -> bool:
        return self.a is not None or self.b is not None

    def inner_multiple(self) -> int:
        """The inner dimension must be a multiple of this (groups of both quantizers and the rotation)."""
        m = 1
        for q in (self.a, self.b):
            if q is not None:
                m = _lcm(m, get_quantizer(q).group_size)
        if not self.rotation.is_identity:
            m = _lcm(m, self.rotation.size)
        return m

    def formula(self, a_name: str, b_name: str) -> str:
        rot = "" if self.rotation.is_identity else f"R={self.rotation}; "
        qa = f"{self.a}({a_name}{'R' if rot else ''})" if self.a else a_name
        qb = f"{self.b}({b_name}{'R' if rot else ''})" if self.b else b_name
        return f"{rot}{qa} @ {qb}^T"


def _lcm(a: int, b: int) -> int:
    from math import gcd

    return a * b // gcd(a, b)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: the three GEMMs of every quantized linear layer. See the module docstring."""

    name: str
    output: GemmRecipe = field(default_factory=GemmRecipe)
    grad_input: GemmRecipe = field(default_factory=GemmRecipe)
    grad_weight: GemmRecipe = field(default_factory=GemmRecipe)
    weight_for_backward: Source = Source.QUANTIZED
    input_for_backward: Source = Source.QUANTIZED
    mask_gradients: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"a recipe needs a non-empty name without spaces, got {self.name!r}")
        for gemm in Gemm:
            value = getattr(self, gemm.value)
            if not isinstance(value, GemmRecipe):
                raise TypeError(f"recipe {self.name!r}: {gemm.value} must be a GemmRecipe, got {type(value).__name__}")
        object.__setattr__(self, "weight_for_backward", Source(self.weight_for_backward))
        object.__setattr__(self, "input_for_backward", Source(self.input_for_backward))
        if not self.output.rotation.is_identity and Source.HIGH_PRECISION in (self.weight_for_backward, self.input_for_backward):
            raise ValueError(
                f"recipe {self.name!r}: the output GEMM rotates along K ({self.output.rotation}), so the backward GEMMs "
                "must read the forward-quantized (rotated) weight and input: set weight_for_backward='quantized' and "
                "input_for_backward='quantized', or drop the forward rotation"
            )

    @property
    def quantized(self) -> bool:
        """False for the high-precision control (every GEMM left in the model's dtype)."""
        return any(getattr(self, g.value).quantized for g in Gemm)

    def gemm(self, gemm: Gemm | str) -> GemmRecipe:
        return getattr(self, Gemm(gemm).value)

    def formulas(self) -> dict[str, str]:
        """The three GEMMs written out, e.g. for ``explain()`` and the docstrings."""
        w_bwd = "Wq" if self.weight_for_backward is Source.QUANTIZED else "W"
        x_bwd = "Xq" if self.input_for_backward is Source.QUANTIZED else "X"
        return {
            "output": "y = " + self.output.formula("X", "W"),
            "grad_input": "dX = " + self.grad_input.formula("E", f"{w_bwd}^T"),
            "grad_weight": "dW = " + self.grad_weight.formula("E^T", f"{x_bwd}^T"),
        }


def _rot(kind: str, size: int) -> Rotation:
    return Rotation(RotationKind(kind), size)


_BUILTIN = [
    Recipe(
        name="quartet",
        description=(
            "Quartet (arXiv 2505.14669 v4): MXFP4 everywhere. Forward: Hadamard-32 + QuEST on X and W, trust masks. "
            "Backward: fresh random-sign Hadamard-32 per layer per step on all four operands, 3/4-absmax RTN, "
            "W and X re-quantized from their forward-quantized (rotated) values.\n"
            "  y  = QuEST(X H) @ QuEST(W H)^T\n"
            "  dX = 16/9 * ((Q34(E R) @ Q34(Wq^T R)^T) * Mx) H^T\n"
            "  dW = 16/9 * ((Q34(E^T R) @ Q34(Xq^T R)^T) * Mw) H^T"
        ),
        output=GemmRecipe("mxfp4_quest", "mxfp4_quest", _rot("hadamard", 32)),
        grad_input=GemmRecipe("mxfp4_tseng_rtn", "mxfp4_tseng_rtn", _rot("random_hadamard", 32)),
        grad_weight=GemmRecipe("mxfp4_tseng_rtn", "mxfp4_tseng_rtn", _rot("random_hadamard", 32)),
    ),
    Recipe(
        name="quartet-sr",
        description=(
            "Quartet as in its v1-v3 papers and repository config: the same as 'quartet' with stochastic rounding "
            "in the backward (unbiased, higher variance).\n"
            "  y  = QuEST(X H) @ QuEST(W H)^T\n"
            "  dX = 16/9 * ((SR34(E R) @ SR34(Wq^T R)^T) * Mx) H^T\n"
            "  dW = 16/9 * ((SR34(E^T R) @ SR34(Xq^T R)^T) * Mw) H^T"
        ),
        output=GemmRecipe("mxfp4_quest", "mxfp4_quest", _rot("hadamard", 32)),
        grad_input=GemmRecipe("mxfp4_tseng_sr", "mxfp4_tseng_sr", _rot("random_hadamard", 32)),
        grad_weight=GemmRecipe("mxfp4_tseng_sr", "mxfp4_tseng_sr", _rot("random_hadamard", 32)),
    ),
    Recipe(
        name="quartet2",
        description=(
            "Quartet II (arXiv 2601.22813 v2): NVFP4. Forward: RTN 1x16 with 4/6 scale selection on X and W. "
            "Backward: random-sign Hadamard-128 per layer per step, MS-EDEN on all four operands, W and X "
            "re-quantized from their forward-quantized values.\n"
            "  y  = RTN46(X) @ RTN46(W)^T                      (times both tensor scales)\n"
            "  dX = MSEDEN(E R) @ MSEDEN(deq(Wq)^T R)^T\n"
            "  dW = MSEDEN(E^T R) @ MSEDEN(deq(Xq)^T R)^T"
        ),
        output=GemmRecipe("nvfp4_4over6", "nvfp4_4over6"),
        grad_input=GemmRecipe("nvfp4_ms_eden", "nvfp4_ms_eden", _rot("random_hadamard", 128)),
        grad_weight=GemmRecipe("nvfp4_ms_eden", "nvfp4_ms_eden", _rot("random_hadamard", 128)),
    ),
    Recipe(
        name="nvidia",
        description=(
            "NVIDIA's NVFP4 recipe (arXiv 2509.25149) as re-implemented by Quartet II: X RTN 1x16, W RTN 16x16 "
            "(so Wq serves the transpose unchanged); dX with stochastically rounded E and the forward Wq reused; "
            "dW with random-sign Hadamard-16 along T, E^T rounded stochastically, X^T re-quantized with RTN "
            "from the high-precision X.\n"
            "  y  = RTN(X) @ RTN16x16(W)^T\n"
            "  dX = SR(E) @ deq(Wq)                            (no re-quantization)\n"
            "  dW = SR(E^T R) @ RTN(X^T R)^T"
        ),
        output=GemmRecipe("nvfp4_rtn", "nvfp4_rtn_16x16"),
        grad_input=GemmRecipe("nvfp4_sr", None),
        grad_weight=GemmRecipe("nvfp4_sr", "nvfp4_rtn", _rot("random_hadamard", 16)),
        input_for_backward=Source.HIGH_PRECISION,
    ),
    Recipe(
        name="mxfp4-rtn",
        description=(
            "Naive MXFP4 baseline: OCP scale rule and round-to-nearest on every operand of every GEMM, no rotation, "
            "backward operands quantized from the high-precision tensors.\n"
            "  y  = RTN(X) @ RTN(W)^T ;  dX = RTN(E) @ RTN(W^T)^T ;  dW = RTN(E^T) @ RTN(X^T)^T"
        ),
        output=GemmRecipe("mxfp4_rtn", "mxfp4_rtn"),
        grad_input=GemmRecipe("mxfp4_rtn", "mxfp4_rtn"),
        grad_weight=GemmRecipe("mxfp4_rtn", "mxfp4_rtn"),
        weight_for_backward=Source.HIGH_PRECISION,
        input_for_backward=Source.HIGH_PRECISION,
    ),
    Recipe(
        name="bf16",
        description=(
            "The control: the same passes and report, every GEMM left in the model's own dtype "
            "(bit-identical to compiling without fp4compile).\n  y = X @ W^T ;  dX = E @ W ;  dW = E^T @ X"
        ),
        weight_for_backward=Source.HIGH_PRECISION,
        input_for_backward=Source.HIGH_PRECISION,
    ),
]

_RECIPES: dict[str, Recipe] = {r.name: r for r in _BUILTIN}
DEFAULT_RECIPE = "quartet"


def recipes() -> list[str]:
    """Names of every registered recipe (built-in first)."""
    return list(_RECIPES)


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A recipe by name (or the Recipe itself); unknown names list the known ones."""
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return _RECIPES[recipe]
    except (KeyError, TypeError):
        raise KeyError(f"unknown recipe {recipe!r}; known recipes: {', '.join(_RECIPES)} (or pass a fp4compile.Recipe)") from None


def register_recipe(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Make a custom recipe usable by name (the backend registers Recipe objects it is given)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"register_recipe takes a fp4compile.Recipe, got {type(recipe).__name__}")
    existing = _RECIPES.get(recipe.name)
    if existing is not None and existing != recipe and not replace:
        raise ValueError(f"another recipe named {recipe.name!r} is registered; rename yours or pass replace=True")
    _RECIPES[recipe.name] = recipe
    return recipe
