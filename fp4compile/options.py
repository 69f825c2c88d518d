"""Backend options: what ``torch.compile(model, backend="quartet", options={...})`` accepts.

Parsed once into a frozen :class:`Options`; an unknown key or a bad value is an error that lists the
valid choices, before anything is traced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum

from fp4compile.config import DEFAULT_RECIPE, Recipe, get_recipe, register_recipe
from fp4compile.reference.linear import DEFAULT_SKIP


class KernelTarget(str, Enum):
    AUTO = "auto"  # the best target this machine has for each op
    REFERENCE = "reference"  # the plain-PyTorch reference, any device
    TRITON = "triton"  # Triton kernels on a CUDA GPU
    BLACKWELL = "blackwell"  # native block-scaled FP4 GEMMs, compute capability 10.x


class FuseLinears(str, Enum):
    AUTO = "auto"  # fuse linears sharing an input where the fused layer quantizes the same groups (passes/fuse_linears.py)
    ALWAYS = "always"  # fuse every such group (NVFP4's tensor scales then span the fused weight and gradient)
    NEVER = "never"


class BadShape(str, Enum):
    SKIP = "skip"  # keep the layer in high precision and say why in explain() (and a warning)
    ERROR = "error"  # stop compiling with an error naming the module and the dimension


@dataclass(frozen=True)
class Options:
    recipe: Recipe
    skip: tuple[str, ...] = DEFAULT_SKIP
    kernels: KernelTarget = KernelTarget.AUTO
    seed: int = 0
    inductor: bool = True
    bad_shapes: BadShape = BadShape.SKIP
    debug: bool = False
    dump_dir: str | None = None
    cudagraphs: bool = False
    fuse_linears: FuseLinears = FuseLinears.AUTO

    def key(self) -> str:
        """A stable text of every option, for cache keys."""
        return repr((self.recipe, self.skip, self.kernels.value, self.seed, self.inductor, self.bad_shapes.value, self.debug, self.cudagraphs,
                     self.fuse_linears.value))


_HELP = {
    "recipe": f"a recipe name or fp4compile.Recipe (default {DEFAULT_RECIPE!r})",
    "skip": "module-name globs kept in high precision (default: output heads named lm_head)",
    "kernels": "'auto' | 'reference' | 'triton' | 'blackwell'",
    "seed": "base seed of the backward rotations and stochastic rounding (int)",
    "inductor": "compile the rest of the graph with Inductor (default True); False runs it eagerly",
    "bad_shapes": "'skip' (default: keep layers whose shape the format cannot take in high precision) or 'error'",
    "debug": "check graph invariants after every pass",
    "dump_dir": "write graphs, the site table and a drawing of each compiled graph to this folder",
    "cudagraphs": "replay each compiled graph as a CUDA graph (Inductor's cudagraph trees; default False): removes the "
    "host's launch overhead; needs CUDA and the triton kernels, and is turned off with a warning where they are not",
    "fuse_linears": "'auto' (default: linear layers sharing an input, e.g. q/k/v, become one where that quantizes the same "
    "groups: MXFP4 recipes), True (every such group), False (none)",
}


def option_names() -> list[str]:
    return [f.name for f in fields(Options)]


def parse_options(options: Mapping | None) -> Options:
    """Validate the user's ``options`` dict into :class:`Options`."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(_HELP))
    if unknown:
        valid = "\n".join(f"  {k}: {v}" for k, v in _HELP.items())
        raise ValueError(f"unknown fp4compile option(s) {', '.join(map(repr, unknown))}; valid options are:\n{valid}")
    recipe = options.pop("recipe", DEFAULT_RECIPE)
    if isinstance(recipe, Recipe):
        register_recipe(recipe)
    recipe = get_recipe(recipe)
    skip = options.pop("skip", DEFAULT_SKIP)
    if isinstance(skip, str):
        skip = (skip,)
    if not all(isinstance(s, str) for s in skip):
        raise TypeError(f"option 'skip' takes module-name globs (strings), got {skip!r}")
    seed = options.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"option 'seed' takes an int, got {seed!r}")
    kwargs = {}
    for name, enum in (("kernels", KernelTarget), ("bad_shapes", BadShape)):
        if name in options:
            value = options.pop(name)
            try:
                kwargs[name] = enum(value)
            except ValueError:
                raise ValueError(f"option {name!r} must be one of {', '.join(e.value for e in enum)}, got {value!r}") from None
    for name in ("inductor", "debug", "cudagraphs"):
        if name in options:
            value = options.pop(name)
            if not isinstance(value, bool):
                raise TypeError(f"option {name!r} takes True or False, got {value!r}")
            kwargs[name] = value
    if "fuse_linears" in options:
        value = options.pop("fuse_linears")
        if isinstance(value, bool):
            kwargs["fuse_linears"] = FuseLinears.ALWAYS if value else FuseLinears.NEVER
        elif isinstance(value, str) and value in {e.value for e in FuseLinears}:
            kwargs["fuse_linears"] = FuseLinears(value)
        else:
            raise ValueError(f"option 'fuse_linears' takes 'auto', True or False ('always' / 'never'), got {value!r}")
    if "dump_dir" in options:
        value = options.pop("dump_dir")
        kwargs["dump_dir"] = None if value is None else str(value)
    return Options(recipe=recipe, skip=tuple(skip), seed=seed, **kwargs)
