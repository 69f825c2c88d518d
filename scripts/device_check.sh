#!/usr/bin/env bash
# Everything that belongs together on the GPU machine, in one go: install (no network there), run the
# whole test suite (CPU tests on that machine's torch too, then the GPU tests), then the main job briefly.
# Usage on the device: bash scripts/device_check.sh   (logs land in $OUT when set)
set -uo pipefail
OUT=${OUT:-/tmp/fp4compile_device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v WARNING | tail -3
python3 -c "import fp4compile.passes, fp4compile.lowering; print(\"fp4compile imports from\", fp4compile.__file__)" || exit 1
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.log" | tail -15
timeout 300 python3 examples/quickstart.py --steps 40 2>&1 | tee "$OUT/quickstart.log" | tail -25
