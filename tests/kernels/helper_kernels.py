"""One-line Triton kernels around the quantize kernel's helpers, for their tests (Triton resolves a kernel's
helpers from its module's globals, so each wrapper lives in a module that imports them)."""

import triton
import triton.language as tl

from fp4compile.kernels.rotate_quantize import _div, _div_by, _sr_code


@triton.jit
def divide_kernel(x_ptr, d_ptr, out_ptr, BLOCK: tl.constexpr):
    """out = x / d elementwise through ``_div_by(x, d, RN(1 / d))``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    d = tl.load(d_ptr + offs)
    tl.store(out_ptr + offs, _div_by(x, d, _div(1.0, d)))


@triton.jit
def sr_code_kernel(mag_ptr, u_ptr, code_ptr, value_ptr, BLOCK: tl.constexpr):
    """(code, value) = ``_sr_code(mag, u)`` elementwise: stochastic rounding of mag in [0, 6] given uniforms u."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    code, value = _sr_code(tl.load(mag_ptr + offs), tl.load(u_ptr + offs))
    tl.store(code_ptr + offs, code)
    tl.store(value_ptr + offs, value)
