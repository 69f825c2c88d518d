"""Machine instructions per element of the rotate-quantize kernels, counted for sm_90 without a GPU.

    python -m fp4compile.kernels.instruction_count      # every compile_check variant and both pre-passes

Nsight Compute showed these kernels bound by instruction issue, not by memory (docs/perf_notes.md): their
time follows the instructions they issue per element. This compiles each variant as the launcher
specialises it at run time (compile_check's ``as_launched``), disassembles the cubin with the ``nvdisasm``
that ships with Triton, and prints SASS instructions per element and the most frequent opcodes. The kernels
are straight-line code, so the static count is what a program issues, except for rare branches that are
counted but seldom taken (the FP8 fold's path for groups far below their row's maximum, the IEEE
division's slow path). Must run without TRITON_INTERPRET.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

from fp4compile.kernels.compile_check import VARIANTS, compile_stats_kernels, compile_variant

_OPCODE = re.compile(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def _nvdisasm() -> str:
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    found = bundled if os.path.exists(bundled) else shutil.which("nvdisasm")
    if found is None:
        raise SystemExit("instruction_count needs nvdisasm (shipped with Triton's NVIDIA backend, or the CUDA toolkit's)")
    return found


def opcodes(cubin: bytes) -> collections.Counter:
    """Opcode (without modifiers) -> count, over the cubin's SASS."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([_nvdisasm(), "-c", f.name], capture_output=True, text=True, check=True).stdout
    return collections.Counter(m.group(1) for m in map(_OPCODE.match, sass.splitlines()) if m)


def report(name: str, cubin: bytes, elements_per_thread: int) -> str:
    ops = opcodes(cubin)
    total = sum(ops.values())
    top = ", ".join(f"{o} {c}" for o, c in ops.most_common(8))
    return f"{name}: {total} instructions, {total / elements_per_thread:.0f} per element ({top})"


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        print("instruction_count must run without TRITON_INTERPRET", file=sys.stderr)
        return 2
    # compile_check's tiles: 32 rows x 128 elements over 128 threads, i.e. 32 elements per thread
    for name, *args in VARIANTS:
        print(report(name, compile_variant(90, *args, as_launched=True).asm["cubin"], 32))
    for name, kernel in compile_stats_kernels(90, as_launched=True):
        print(report(name, kernel.asm["cubin"], 32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
