"""Claim: the rotate-quantize kernel compiles (PTX and cubin) for Hopper (sm_90) and Blackwell (sm_100)
in every rule and source variant the launcher uses, without a GPU. This catches what Triton's CPU
interpreter lets through. (Compiling is all we can do for sm_100 here: no Blackwell GPU is available.)
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import requires_triton


@requires_triton
def test_quantize_kernel_compiles_for_sm90_and_sm100():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "fp4compile.kernels.compile_check", "90", "100"], env=env, capture_output=True, text=True, timeout=900)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    from fp4compile.kernels.compile_check import HOPPER_ONLY_VALUES, VARIANTS

    others = 1 + 4  # NVFP4's pre-pass kernel; fold / bf16 / the two epilogues
    blackwell = sum(v[-2] != HOPPER_ONLY_VALUES for v in VARIANTS)  # sm_100 takes packed FP4, not the FP8 form
    assert out.stdout.count("sm_90 ") == len(VARIANTS) + others
    assert out.stdout.count("sm_100 ") == blackwell + others
    assert out.stdout.count(": ok") == len(VARIANTS) + blackwell + 2 * others


@requires_triton
def test_instruction_count_reports_every_variant():
    """The SASS instruction counter (the tool that guides kernel work, docs/perf_notes.md) reads every variant."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "fp4compile.kernels.instruction_count"], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    from fp4compile.kernels.compile_check import VARIANTS

    counts = [float(line.split(" per element")[0].rsplit(", ", 1)[1]) for line in out.stdout.splitlines()]
    assert len(counts) == len(VARIANTS) + 4 and all(c > 0 for c in counts), out.stdout  # + stats, fold, two epilogues
