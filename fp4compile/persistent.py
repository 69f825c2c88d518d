"""Long-lived device tensors (step counters, constants, placeholders) made safe for CUDA graphs.

The ops keep a few tensors across calls: each call site's step counter, cached constants, fixed rotation
matrices. Under ``torch.compile``'s CUDA graphs (the backend's ``cudagraphs`` option) the first calls run
eagerly with every allocation *of the calling thread* routed to the graphs' private memory pool, whose
blocks the graph tree may hand out again later: a cached tensor living there could be overwritten. So
these tensors are built on a helper thread (its allocations come from the ordinary pool), which waits for
its own stream before handing them over. Nothing may be built during a capture: the eager warm-up calls
that always precede one fill the caches, and a miss during a capture is an error that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fp4compile-persistent")


def make(device: torch.device | str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()`` run so that its result is safe to keep across CUDA-graph replays (see module doc)."""
    device = torch.device(device)
    if device.type != "cuda":
        return build()
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "fp4compile: a cached device tensor was first needed while a CUDA graph was being captured; "
            "the eager warm-up call should have created it. Compile without options={'cudagraphs': True} "
            "and report this as a bug"
        )

    def run() -> torch.Tensor:
        with torch.cuda.device(device):
            out = build()
            torch.cuda.current_stream().synchronize()  # filled before any other stream reads it
        return out

    return _BUILDER.submit(run).result()


_CACHE: dict[tuple, torch.Tensor] = {}


def cached(key: tuple, device: torch.device | str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor cached under ``(key, device)``, made by :func:`make` on first use and never evicted (a
    captured CUDA graph keeps reading its address)."""
    full = (*key, torch.device(device))
    if full not in _CACHE:
        _CACHE[full] = make(device, build)
    return _CACHE[full]
