"""A one-line Triton kernel around ``_div_by`` for its test (Triton resolves a kernel's helpers from its module's globals)."""

import triton
import triton.language as tl

from fp4compile.kernels.rotate_quantize import _div, _div_by


@triton.jit
def divide_kernel(x_ptr, d_ptr, out_ptr, BLOCK: tl.constexpr):
    """out = x / d elementwise through ``_div_by(x, d, RN(1 / d))``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    d = tl.load(d_ptr + offs)
    tl.store(out_ptr + offs, _div_by(x, d, _div(1.0, d)))
