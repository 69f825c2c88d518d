"""Kernel selection: which implementation runs each fp4compile op, with the reason.

``reference`` (plain PyTorch, any device) is always available. ``triton`` needs a CUDA GPU and Triton;
``blackwell`` needs compute capability 10.x. A target this machine lacks is an error naming what is
missing and what to use instead. ``auto`` picks the best target available for the site's device.
"""

from __future__ import annotations

import importlib.util

import torch

from fp4compile.options import KernelTarget, Options


def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def check_target(target: KernelTarget) -> None:
    """Raise a clear error if this machine cannot run ``target``."""
    if target in (KernelTarget.AUTO, KernelTarget.REFERENCE):
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"options['kernels']={target.value!r} needs a CUDA GPU, and this machine has none; use 'auto' or 'reference'")
    if target is KernelTarget.TRITON and not _has_triton():
        raise RuntimeError("options['kernels']='triton' needs the triton package (pip install triton); use 'auto' or 'reference'")
    if target is KernelTarget.BLACKWELL and torch.cuda.get_device_capability()[0] != 10:
        cap = ".".join(map(str, torch.cuda.get_device_capability()))
        raise RuntimeError(f"options['kernels']='blackwell' needs compute capability 10.x (B200/GB200); this GPU is {cap}; use 'auto'")
    raise RuntimeError(
        f"options['kernels']={target.value!r}: the {target.value} kernels are not part of this version of fp4compile yet; use 'auto' or 'reference'"
    )


def select_kernel(options: Options, site) -> tuple[str, str]:
    """(kernel, reason) for one site."""
    if options.kernels is KernelTarget.REFERENCE:
        return "reference", "kernels='reference'"
    if options.kernels is KernelTarget.AUTO:
        return "reference", "auto: the reference is the only lowering of this version"
    check_target(options.kernels)
    return options.kernels.value, f"kernels={options.kernels.value!r}"
