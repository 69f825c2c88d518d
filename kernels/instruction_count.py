"""Machine instructions per element of the rotate-quantize kernels, counted for sm_90 without a GPU.

    python -m fp4compile.kernels.instruction_count      # every compile_check variant, NVFP4's pre-pass, the FP8 fold

Nsight Compute showed these kernels bound by instruction issue, not by memory (docs/perf_notes.md): their
time follows the instructions they issue per element. This compiles each variant as the launcher
specialises it at run time (compile_check's ``as_launched``: the launcher's tile and warps), disassembles the
cubin with the ``nvdisasm`` that ships with Triton, and prints SASS instructions per element, the registers
per thread (``cuobjdump``) with the resident warps per SM they allow (the kernels ran at 2 warps per scheduler,
limited by registers, in Nsight Compute), and the most frequent opcodes. The kernels
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

from fp4compile.kernels.compile_check import VARIANTS, compile_epilogues, compile_fold, compile_stats_kernels, compile_variant
from fp4compile.kernels.rotate_quantize import Tile

_OPCODE = re.compile(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def _tool(name: str) -> str:
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    found = bundled if os.path.exists(bundled) else shutil.which(name)
    if found is None:
        raise SystemExit(f"instruction_count needs {name} (shipped with Triton's NVIDIA backend, or the CUDA toolkit's)")
    return found


def _on_cubin(tool: str, flag: str, cubin: bytes) -> str:
    """What ``tool flag <cubin file>`` prints."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_tool(tool), flag, f.name], capture_output=True, text=True, check=True).stdout


def registers(cubin: bytes) -> int:
    """Registers per thread of the cubin's kernel (``cuobjdump --dump-resource-usage``)."""
    out = _on_cubin("cuobjdump", "--dump-resource-usage", cubin)
    found = re.search(r"REG:(\d+)", out)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no register count: {out[:300]}")
    return int(found.group(1))


def warps_per_sm(regs: int, num_warps: int) -> int:
    """Resident warps per Hopper SM that the registers allow (64K registers, allocated per warp in units of 256; at most 64 warps)."""
    per_warp = -(-regs * 32 // 256) * 256
    return min(64, 65536 // (per_warp * num_warps) * num_warps)


def opcodes(cubin: bytes) -> collections.Counter:
    """Opcode (without modifiers) -> count, over the cubin's SASS."""
    sass = _on_cubin("nvdisasm", "-c", cubin)
    return collections.Counter(m.group(1) for m in map(_OPCODE.match, sass.splitlines()) if m)


def report(name: str, cubin: bytes, tile: Tile, per_thread: int | None = None) -> str:
    """One line: instructions (per element of the tile's share per thread, or of ``per_thread`` elements for a kernel
    whose threads each take a fixed share: the butterfly epilogue's 32-element group), registers and the warps per SM
    they allow."""
    ops = opcodes(cubin)
    total = sum(ops.values())
    elements_per_thread = per_thread or tile.block_r * tile.block_k // (32 * tile.num_warps)
    regs = registers(cubin)
    top = ", ".join(f"{o} {c}" for o, c in ops.most_common(8))
    shape = f"{per_thread} elements per thread" if per_thread else f"{tile.block_r}x{tile.block_k}"
    return (f"{name} [{shape}/{tile.num_warps} warps]: {total} instructions, {total / elements_per_thread:.0f} per element, "
            f"{regs} registers ({warps_per_sm(regs, tile.num_warps)} warps per SM) ({top})")


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        print("instruction_count must run without TRITON_INTERPRET", file=sys.stderr)
        return 2
    # each variant on the launcher's tile (default_tile), as it runs
    for name, *args in VARIANTS:
        kernel, tile = compile_variant(90, *args, as_launched=True)
        print(report(name, kernel.asm["cubin"], tile))
    for name, kernel, tile in compile_stats_kernels(90, as_launched=True):
        print(report(name, kernel.asm["cubin"], tile))
    kernel, (block_m, block_k, warps) = compile_fold(90, as_launched=True)
    print(report("fold: packed MXFP4 -> FP8", kernel.asm["cubin"], Tile(block_m, block_k, warps)))
    for name, kernel, per_thread, warps in compile_epilogues(90, as_launched=True):
        print(report(f"{name}: mask + inverse H32 -> bf16", kernel.asm["cubin"], Tile(1, 16, warps), per_thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
