"""The pass pipeline: one flat ordered list of typed functions ``fn(gm, ctx) -> None``.

Built-in passes and plug-ins use the same list: ``register_pass(fn, after="rewrite_linears")`` adds a
user's pass (it sees ``ctx.sites``, the :class:`MatmulSite` records, and may rewrite the graph; it must
keep ``meta["val"]`` on what it inserts and be idempotent). In debug mode the graph is linted and
recompiled between passes. The pipeline's identity (names and source of every pass) is part of the
compile-cache key.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable

import torch.fx as fx

from fp4compile.passes.apply_policy import apply_policy
from fp4compile.passes.assign_roles import assign_roles
from fp4compile.passes.context import PassContext
from fp4compile.passes.find_matmuls import find_matmuls
from fp4compile.passes.plan_layouts import plan_layouts
from fp4compile.passes.rewrite_linears import rewrite_linears
from fp4compile.passes.verify import check_invariants, verify_graph

log = logging.getLogger("fp4compile")
Pass = Callable[[fx.GraphModule, PassContext], None]

_PIPELINE: list[tuple[str, Pass]] = [
    ("find_matmuls", find_matmuls),
    ("assign_roles", assign_roles),
    ("apply_policy", apply_policy),
    ("plan_layouts", plan_layouts),
    ("rewrite_linears", rewrite_linears),
    ("verify_graph", verify_graph),
]
BUILTIN_PASSES = tuple(name for name, _ in _PIPELINE)


def pipeline() -> list[str]:
    """Names of the passes, in order."""
    return [name for name, _ in _PIPELINE]


def register_pass(fn: Pass, *, after: str = "rewrite_linears", name: str | None = None) -> None:
    """Insert a user's pass after the named pass (re-registering a name replaces it)."""
    if not callable(fn):
        raise TypeError("register_pass takes a function fn(gm: torch.fx.GraphModule, ctx: PassContext) -> None")
    name = name or fn.__name__
    names = pipeline()
    if after not in names:
        raise ValueError(f"register_pass(after={after!r}): no such pass; the pipeline is {', '.join(names)}")
    if name in BUILTIN_PASSES:
        raise ValueError(f"{name!r} is a built-in pass; give yours another name")
    unregister_pass(name)
    _PIPELINE.insert(pipeline().index(after) + 1, (name, fn))


def unregister_pass(name: str) -> None:
    _PIPELINE[:] = [(n, f) for n, f in _PIPELINE if n != name or n in BUILTIN_PASSES]


def pipeline_key() -> str:
    digest = hashlib.sha256()
    for name, fn in _PIPELINE:
        digest.update(name.encode())
        try:
            digest.update(inspect.getsource(fn).encode())
        except (OSError, TypeError):
            digest.update(repr(fn).encode())
    return digest.hexdigest()[:16]


def run_pipeline(gm: fx.GraphModule, ctx: PassContext) -> None:
    for name, fn in list(_PIPELINE):
        fn(gm, ctx)
        if ctx.options.debug:
            check_invariants(gm)
            gm.recompile()
        log.debug("fp4compile pass %s: %d sites", name, len(ctx.sites))
