"""Kernel selection: which implementation runs each fp4compile op, with the reason.

``reference`` (plain PyTorch, any device) is always available. ``triton`` needs a CUDA GPU and Triton;
``blackwell`` is ``triton``'s kernels with Blackwell's native block-scaled FP4 GEMM where the recipe's pair of
quantizers allows it, and needs compute capability 10.x and a native GEMM that passes
:func:`fp4compile.lowering.blackwell.native_gemm_problem`'s probe. A target this machine lacks is an error naming
what is missing and what to use instead. ``auto`` picks the best target available for the site's device:
``blackwell`` on a 10.x GPU whose probe passes, else ``triton`` on a CUDA GPU, else ``reference``.

The ``blackwell`` target has not run on a Blackwell GPU (none was available to its authors): its quantize kernels
are checked bit for bit under Triton's CPU interpreter and compiled for sm_100, its GEMM calls through torch's meta
kernels and a plain-PyTorch twin; the probe is what checks the GEMM on the user's GPU before ``auto`` trusts it.
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
    if target is KernelTarget.BLACKWELL:
        if not _has_triton():
            raise RuntimeError("options['kernels']='blackwell' needs the triton package for its quantize kernels (pip install triton); use 'auto' or 'reference'")
        from fp4compile.lowering.blackwell import native_gemm_problem

        if (problem := native_gemm_problem()) is not None:
            raise RuntimeError(f"options['kernels']='blackwell' cannot run here: {problem}; use 'auto' (FP8/BF16 GEMMs on this GPU) or 'triton'")


def _device(site) -> torch.device:
    val = site.node.meta.get("val")
    return val.device if isinstance(val, torch.Tensor) else torch.device("cpu")


def select_kernel(options: Options, site) -> tuple[str, str]:
    """(kernel, reason) for one site."""
    if options.kernels is KernelTarget.REFERENCE:
        return "reference", "kernels='reference'"
    device = _device(site)
    if options.kernels is KernelTarget.AUTO:
        kernel, reason = auto_target(device)
        return kernel, reason + (_fallbacks(options, site) if kernel != "reference" else "")
    check_target(options.kernels)
    if device.type != "cuda":
        raise RuntimeError(f"options['kernels']={options.kernels.value!r} but module {site.name!r} runs on {device.type}; move it to the GPU or use 'auto'")
    return options.kernels.value, f"kernels={options.kernels.value!r}" + _fallbacks(options, site)


def auto_target(device: torch.device) -> tuple[str, str]:
    """``kernels='auto'``'s (target, reason) for tensors on ``device``."""
    if device.type != "cuda" or not _has_triton():
        why = "this machine has no triton package" if device.type == "cuda" else f"{device.type} tensors"
        return "reference", f"auto: {why}: the plain-PyTorch reference"
    from fp4compile.lowering.blackwell import BLACKWELL_MAJOR, native_gemm_problem

    if torch.cuda.get_device_capability(device)[0] == BLACKWELL_MAJOR:
        if (problem := native_gemm_problem(device)) is None:
            return "blackwell", ("auto: compute capability 10.x, whose native FP4 GEMM passed the probe: fused rotate-quantize kernels, "
                                 "block-scaled FP4 GEMMs (not yet run on a Blackwell GPU by fp4compile's authors)")
        return "triton", f"auto: the native FP4 GEMM is not usable ({problem}): fused rotate-quantize kernels, FP8 / BF16 GEMMs"
    return "triton", "auto: CUDA + Triton: fused rotate-quantize kernels, FP8 (MXFP4) / BF16 (NVFP4) GEMMs"


def _fallbacks(options: Options, site) -> str:
    """Quantizers of this site's GEMM without a Triton kernel rule (plug-ins): their operands run the reference."""
    from fp4compile.kernels.quantize import supports
    from fp4compile.quantizers import get_quantizer

    gemm = options.recipe.gemm("output" if site.role.value == "forward" else site.role.value)
    missing = sorted({q for q in (gemm.a, gemm.b) if q is not None and not supports(get_quantizer(q))})
    return f"; no Triton rule for {', '.join(missing)}: those operands run the reference" if missing else ""


def cudagraph_blocker(options: Options, sites) -> str | None:
    """Why this graph's fp4compile ops cannot be captured in a CUDA graph (None: they can).

    The triton lowering keeps seeds, signs and constants on the device; the reference lowering and the
    reference fallback of plug-in quantizers read seeds on the host (a sync, which capture forbids).
    """
    for site in sites:
        if not site.quantized:
            continue
        if site.kernel not in ("triton", "blackwell"):
            return f"{site.name!r} ({site.role.value}) runs the {site.kernel or 'reference'} kernels, which read seeds on the host"
        if missing := _fallbacks(options, site):
            return f"{site.name!r} ({site.role.value}): {missing.lstrip('; ')}, which reads seeds on the host"
    return None
