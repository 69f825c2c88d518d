#!/usr/bin/env bash
# Everything that belongs together on the GPU machine, in one go (no network there):
#   bash scripts/device_check.sh tests   # install, whole test suite (CPU tests on that torch + GPU tests), kernel bandwidth
#   bash scripts/device_check.sh bench   # one linear layer fwd+bwd at the Llama-7B shapes vs BF16 and torchao float8
#   bash scripts/device_check.sh all     # kernel + GPU tests, the linear table (CUDA graphs), kernel bandwidth (SWEEP=--sweep: every tile),
#                                        # TRAIN=SECONDS: then the 1B step (bf16, quartet; CUDA graphs) within that many seconds
#   bash scripts/device_check.sh perf    # where a linear layer's step goes (profile per recipe), kernel bandwidth, the linear table
#   bash scripts/device_check.sh accuracy [STEPS]  # bench_accuracy.py: every recipe on the 20m model, table + plot in $OUT
#                                                  (TPP=10: tokens per parameter instead of steps; PARALLEL=4: four recipes at
#                                                  a time, one per GPU, slowest first; RECIPES=a,b: those and bf16, ACC_ARGS=--no-bf16
#                                                  without it; ends by second ACC_END=590); runs in accuracy_runs.tgz for --from
#   LANES='nvidia,kernels|bf16,tests' bash scripts/device_check.sh lanes  # one lane per GPU, side by side: 20-tpp accuracy runs, tests, ...
#   bash scripts/device_check.sh accseeds  # (2 GPUs) bench_accuracy for RECIPES (bf16,quartet2,nvidia) under SEEDS (1 2), one seed per GPU
#   bash scripts/device_check.sh train   # bench_train.py: ~1B training step throughput and memory vs BF16 and torchao
#   bash scripts/device_check.sh train2  # GPU tests named in TESTS, the 1B step with CUDA graphs, a 20m tokens/s probe
#   bash scripts/device_check.sh final   # the GPU test suite, then the 1B table with and without CUDA graphs
#   bash scripts/device_check.sh kcheck  # a kernel change: its GPU tests (TESTS, TESTS_S seconds), bench_kernels --graphs (KERNEL_ARGS, e.g.
#                                        # --epilogue; KERNELS_S seconds), bench_linear --cudagraphs (RECIPES: quartet,nvidia)
#   bash scripts/device_check.sh tables  # bench_linear --cudagraphs (7B shapes), then bench_train --cudagraphs (1B; RECIPES + float8 rowwise)
#   bash scripts/device_check.sh speed   # kernel bandwidth (3 interleaved rounds), then the 1B step of every recipe + float8 row-wise, CUDA graphs
#   bash scripts/device_check.sh step1b  # the 1B table (quartet fused / unfused, float8 row-wise), then quartet's step by kernel and operand
#   bash scripts/device_check.sh multigpu  # (2 GPUs) 20m quartet: 1 GPU, another seed, DDP and FSDP2 on 2, compared
#   bash scripts/device_check.sh ncu     # kernel bandwidth, then Nsight Compute counters of every quantize launch (one each)
#   bash scripts/device_check.sh seeds   # (2 GPUs) 20m quartet: 4 seeds on 1 GPU (two at a time), 2 (DDP_SEEDS) under DDP on 2, final val losses compared
#   bash scripts/device_check.sh gemm    # row-wise vs 1x128 block-scaled FP8 GEMMs (bench_gemm_scaling.py), ncu of the quantize kernels
#   bash scripts/device_check.sh tiles   # kernel tests, bench_kernels --sweep (every tile, 3 rounds; SWEEP_ARGS), bench_linear --cudagraphs (RECIPES)
#   bash scripts/device_check.sh graphs  # GPU tests, host/GPU profile with and without CUDA graphs, the linear table with them
#   bash scripts/device_check.sh step    # GPU tests named in TESTS (if any), kernel bandwidth, tile sweeps (SWEEPS='ARGS|ARGS'), where a
#                                        # small model's training step goes (profile_train.py; SIZE, RECIPES, PROFILE_ARGS)
# Kernel tables and sweeps are timed as CUDA-graph replays (bench_kernels.py --graphs; since session 10), as training
# with cudagraphs=True runs them. torchao travels as a wheel in .whl/ (carry it). Logs land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/fp4compile_device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v WARNING | tail -3
if ls .whl/torchao-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/torchao-*.whl 2>&1 | grep -v WARNING | tail -2
  export PYTHONPATH=/tmp/site
fi
python3 -c "import torch, triton, fp4compile.passes; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt" || exit 1
# A bench_accuracy output folder's runs as one archive (at most 8 files come back from a call): each <recipe>/run.json and
# metrics.json, for `bench_accuracy.py --from` here, and each <recipe>.log cut to every 100th step, evaluations, warnings, errors
bundle_runs() {
  local src=$1 dst=$2 b
  b=$(mktemp -d)
  for d in "$src"/*/; do
    mkdir -p "$b/$(basename "$d")" && cp "$d"run.json "$d"metrics.json "$b/$(basename "$d")/" 2>/dev/null
  done
  for f in "$src"/*.log; do
    [ -f "$f" ] && tr '\r' '\n' < "$f" | grep -v "it/s\]" | grep -E "00/|eval|data|warn|rror" > "$b/$(basename "$f")"
  done
  tar czf "$dst" -C "$b" .
}
# bench_accuracy's console output as a log: no warnings or progress-bar frames; the header, data, every 100th step,
# evaluations, errors and the table
accuracy_log_lines() {
  grep -v -i warn | tr '\r' '\n' | grep -v "it/s\]" | grep -E "accuracy|data|eval|step .*00/|rror|\|"
}
case "${1:-tests}" in
  tests)
    python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests} 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -25
    timeout 200 python3 examples/bench_kernels.py --graphs ${SWEEP:-} 2>&1 | tee "$OUT/bench_kernels.log"
    ;;
  bench)
    timeout 560 python3 examples/bench_linear.py "${@:2}" 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    ;;
  perf)  # profiles (GPU busy vs wall, kernels, host syncs), kernel bandwidth, the linear-layer table
    for r in bf16-inductor quartet quartet2 nvidia; do
      timeout 90 python3 examples/profile_linear.py --recipe "$r" --top 12 --host ${HOST:-0} 2>&1 | grep -v -i warn | tee -a "$OUT/profile.log"
    done
    timeout 120 python3 examples/bench_kernels.py --graphs 2>&1 | tee "$OUT/bench_kernels.log"
    timeout 300 python3 examples/bench_linear.py 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    ;;
  accuracy)  # [STEPS] or TPP=tokens per parameter; PARALLEL=N: N recipes at once, one per GPU; run logs and metrics copied to $OUT
    size_args="--steps ${2:-250}"
    if [ -n "${TPP:-}" ]; then size_args="--tokens-per-param $TPP"; fi
    timeout $((${ACC_END:-590} - SECONDS)) python3 examples/bench_accuracy.py $size_args --batch 128 --parallel "${PARALLEL:-1}" ${RECIPES:+--recipes $RECIPES} ${ACC_ARGS:-} --out /tmp/accuracy \
      --table "$OUT/accuracy.md" --plot "$OUT/accuracy.png" 2>&1 | grep -v -i warn | tee "$OUT/accuracy.log" | grep -v "it/s\]" | tail -30
    bundle_runs /tmp/accuracy "$OUT/accuracy_runs.tgz"
    ;;
  lanes)  # several GPUs' work side by side, one lane per GPU: LANES='nvidia,kernels|bf16,tests,profile' (a lane's items in
          # order: a recipe = its accuracy run at TPP tokens per parameter, default 20; tests = TESTS; kernels = the kernel
          # bandwidth table; profile = the 20m step of PROFILE_RECIPES under CUDA graphs); each lane's runs come back in
          # accuracy_lane<i>.tgz, to join by `bench_accuracy.py --from`; everything ends by second ACC_END=590
    IFS='|' read -ra lanes <<< "${LANES:?LANES='recipe,...|recipe,...' (one lane per GPU)}"
    left() { echo $((${ACC_END:-590} - SECONDS - ${1:-0})); }
    for i in "${!lanes[@]}"; do
      (export CUDA_VISIBLE_DEVICES=$i
       rm -rf /tmp/acc_lane$i  # a warm machine keeps the last call's runs: bundle this call's only
       for item in ${lanes[$i]//,/ }; do
         case "$item" in
           tests) timeout "$(left 90)" python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/kernels tests/test_gpu.py} 2>&1 \
                    | grep -v DEBUG > "$OUT/pytest.log" ;;
           kernels) timeout "$(left)" python3 examples/bench_kernels.py --graphs > "$OUT/bench_kernels.log" 2>&1 ;;
           profile) timeout "$(left)" python3 examples/profile_train.py --size 20m --recipes ${PROFILE_RECIPES:-quartet2} --graphs-only 2>&1 \
                      | grep -v -i warn > "$OUT/profile_train.log" ;;
           *) timeout "$(left)" python3 examples/bench_accuracy.py --tokens-per-param ${TPP:-20} --batch 128 --recipes "$item" --no-bf16 \
                --out /tmp/acc_lane$i 2>&1 | accuracy_log_lines >> "$OUT/accuracy_lane$i.log" ;;
         esac
       done
       bundle_runs /tmp/acc_lane$i "$OUT/accuracy_lane$i.tgz") &
    done
    wait
    tail -3 "$OUT/pytest.log" 2>/dev/null; cat "$OUT/bench_kernels.log" "$OUT/profile_train.log" 2>/dev/null
    for f in "$OUT"/accuracy_lane*.log; do echo "## $f"; grep -E "eval step|rror" "$f" | tail -3; done
    ;;
  accseeds)  # more seeds for the closest recipes: bench_accuracy (TPP, RECIPES) once per seed in SEEDS, one seed per GPU, at once
    i=0
    for s in ${SEEDS:-1 2}; do
      (CUDA_VISIBLE_DEVICES=$i timeout $((${ACC_END:-580} - SECONDS)) python3 examples/bench_accuracy.py --tokens-per-param ${TPP:-6} --batch 128 \
        --seed "$s" --recipes ${RECIPES:-bf16,quartet2,nvidia} --out /tmp/acc_s$s --table "$OUT/accuracy_seed$s.md" 2>&1 \
        | accuracy_log_lines > "$OUT/accuracy_seed$s.log") &
      i=$((i + 1))
    done
    wait
    for s in ${SEEDS:-1 2}; do
      echo "## seed $s"; cat "$OUT/accuracy_seed$s.md" 2>/dev/null || tail -5 "$OUT/accuracy_seed$s.log"
      bundle_runs /tmp/acc_s$s "$OUT/accuracy_runs_seed$s.tgz"
    done
    ;;
  train)
    timeout 570 python3 examples/bench_train.py "${@:2}" --json "$OUT/bench_train.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train.log" | tail -20
    ;;
  graphs)  # GPU tests (CUDA-graph replay included), where the step goes with and without CUDA graphs, the linear table
    python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/kernels tests/test_gpu.py} 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -8
    for cg in "" --cudagraphs; do
      for r in bf16-inductor quartet; do
        timeout 90 python3 examples/profile_linear.py --recipe "$r" --tokens 2048 --k 2048 --n 2048 --top 0 $cg 2>&1 | grep -v -i warn | tee -a "$OUT/profile.log"
      done
    done
    timeout 330 python3 examples/bench_linear.py --cudagraphs 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    ;;
  train2)  # the 1B throughput table with CUDA graphs, and the 20m model's tokens/s under them
    [ -n "${TESTS:-}" ] && python3 -m pytest -q -p no:cacheprovider -rs $TESTS 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -4
    timeout ${TRAIN_S:-330} python3 examples/bench_train.py --cudagraphs ${TRAIN_ARGS:---recipes quartet --float8 rowwise --warmup 2 --steps 5} \
      --json "$OUT/bench_train.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train.log" | tail -14
    for r in bf16 quartet; do
      timeout 100 python3 examples/train.py --size 20m --recipe $r --steps 60 --batch 128 --seq 256 --eval-every 60 --log-every 20 \
        --cudagraphs --out /tmp/probe_$r 2>&1 | grep -v -i warn | tr '\r' '\n' | grep -E "tok/s|step 60|val" | tail -3 | tee -a "$OUT/probe.log"
    done
    ;;
  step1b)  # the 1B step: GPU tests named in TESTS, the throughput table (quartet fused and unfused, float8 row-wise), then where
           # quartet's step goes, our kernels by grid (operand) and the GPU's idle gaps; sessions 13-14's calls, ~450 s fresh
    [ -n "${TESTS:-}" ] && timeout ${TESTS_S:-150} python3 -m pytest -q -p no:cacheprovider $TESTS 2>&1 | tail -3 | tee "$OUT/pytest.log"
    timeout ${TRAIN_S:-300} python3 examples/bench_train.py --cudagraphs --recipes quartet --unfused --float8 rowwise --warmup 3 --steps 5 \
      --json "$OUT/bench_train.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train.log" | tail -9
    timeout ${PROFILE_S:-250} python3 examples/profile_train.py --size 1b --batch 16 --seq 2048 --recipes quartet --steps 3 --top 16 --gaps \
      --by-grid quantize_kernel,fold_kernel,epilogue_h32_kernel,triton_ 2>&1 | grep -v -i warn | tee "$OUT/profile.log" | head -90
    ;;
  multigpu)  # the same global batch on 1 and 2 GPUs (DDP, FSDP2), with a second seed as the noise yardstick
    common="--size 20m --recipe quartet --steps ${STEPS:-300} --batch 64 --seq 256 --eval-every 100 --log-every 100"
    run() { timeout 150 "$@" 2>&1 | grep -v -i warn | tr '\r' '\n' | grep -E "^\[|Error|error" | tail -3 | tee -a "$OUT/multigpu.log"; }
    run python3 examples/train.py $common --out /tmp/mg/one_gpu
    run python3 examples/train.py $common --seed 1 --out /tmp/mg/one_gpu_seed1
    run python3 -m torch.distributed.run --nproc_per_node 2 examples/train.py $common --out /tmp/mg/ddp_2gpu
    run python3 examples/train.py $common --fsdp --out /tmp/mg/per_block_1gpu
    run python3 -m torch.distributed.run --nproc_per_node 2 examples/train.py $common --fsdp --out /tmp/mg/fsdp_2gpu
    repo=$PWD; cd /tmp/mg
    python3 "$repo/examples/compare_runs.py" one_gpu one_gpu_seed1 ddp_2gpu | tee -a "$OUT/multigpu.md"
    python3 "$repo/examples/compare_runs.py" per_block_1gpu one_gpu_seed1 fsdp_2gpu | tee -a "$OUT/multigpu.md"
    ;;
  seeds)  # is the DDP curve within seed noise of the 1-GPU one? several seeds of each, same global batch
    common="--size 20m --recipe quartet --steps ${STEPS:-300} --batch 64 --seq 256 --eval-every 100 --log-every 100"
    quiet() { grep -v -i warn | tr '\r' '\n' | grep -E "^\[|Error|error" | tail -2; }
    for pair in "0 1" "2 3"; do
      set -- $pair
      (CUDA_VISIBLE_DEVICES=0 timeout 200 python3 examples/train.py $common --seed $1 --out /tmp/sd/one_s$1 2>&1 | quiet > /tmp/sd_a.log) &
      (CUDA_VISIBLE_DEVICES=1 timeout 200 python3 examples/train.py $common --seed $2 --out /tmp/sd/one_s$2 2>&1 | quiet > /tmp/sd_b.log) &
      wait; cat /tmp/sd_a.log /tmp/sd_b.log | tee -a "$OUT/seeds.log"
    done
    for s in ${DDP_SEEDS:-0 1}; do
      timeout 200 python3 -m torch.distributed.run --nproc_per_node 2 examples/train.py $common --seed $s --out /tmp/sd/ddp_s$s 2>&1 | quiet | tee -a "$OUT/seeds.log"
    done
    cd /tmp/sd && python3 "$OLDPWD/examples/compare_runs.py" --seeds one_gpu=one_s0,one_s1,one_s2,one_s3 ddp_2gpu=$(for s in ${DDP_SEEDS:-0 1}; do printf ddp_s%s, $s; done | sed 's/,$//') | tee "$OUT/seeds.md"
    ;;
  final)  # the GPU tests on the final code, the 1B rows of every recipe with CUDA graphs, memory without them
    timeout 280 python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/kernels tests/test_gpu.py} 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -6
    timeout 200 python3 examples/bench_train.py --cudagraphs --recipes quartet,quartet2,nvidia --float8 '' --warmup 2 --steps 5 \
      --json "$OUT/bench_train_graphs.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train_graphs.log" | tail -10
    timeout 110 python3 examples/bench_train.py --recipes quartet --float8 '' --warmup 1 --steps 3 \
      --json "$OUT/bench_train_plain.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train_plain.log" | tail -6
    ;;
  ncu)  # where the quantize kernels' time goes: bandwidth table, then hardware counters per launch
    timeout 150 python3 examples/bench_kernels.py --graphs 2>&1 | tee "$OUT/bench_kernels.log"
    timeout 300 ncu --clock-control none --profile-from-start off --section SpeedOfLight --section LaunchStats --section Occupancy \
      --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section InstructionStats \
      python3 examples/bench_kernels.py --once ${NCU_ARGS:-} > "$OUT/ncu.txt" 2>&1
    grep -E "^  [a-z_]+kernel|Duration|Memory Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Executed Ipc A|Issue Slots Busy|One or More Eligible|Stall|Shared Memory Configuration Size" "$OUT/ncu.txt" | head -250
    ;;
  gemm)  # row-wise against 1x128 block-wise scaled FP8 GEMMs at the Llama-7B shapes, then the ncu counters of the quantize kernels
    timeout 200 python3 examples/bench_gemm_scaling.py 2>&1 | grep -v -i warn | tee "$OUT/bench_gemm_scaling.log"
    if [ -n "${SWEEP:-}" ]; then
      timeout 400 python3 examples/bench_kernels.py --graphs --repeat 1 --sweep 2>&1 | tee "$OUT/bench_kernels_sweep.log"
    fi
    if [ -z "${NCU-1}" ]; then exit 0; fi  # NCU= skips the counters
    timeout 300 ncu --clock-control none --profile-from-start off --section SpeedOfLight --section LaunchStats --section Occupancy \
      --section WarpStateStats --section InstructionStats python3 examples/bench_kernels.py --once > "$OUT/ncu.txt" 2>&1
    grep -E "^  [a-z_]+kernel|Duration|Memory Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|Executed Instructions  " "$OUT/ncu.txt" | head -200
    ;;
  tiles)  # kernel tests on the launcher's tiles, every kernel under every tile (3 rounds; SWEEP_ARGS: e.g. --graphs --only .. --tiles ..),
          # the linear table (CUDA graphs; RECIPES); TESTS_S / SWEEP_S: time limits of the first two steps
    timeout ${TESTS_S:-400} python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/kernels/test_quantize_kernels.py tests/kernels/test_fold_kernels.py} 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -6
    timeout ${SWEEP_S:-330} python3 examples/bench_kernels.py --graphs --sweep ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/bench_kernels_sweep.log"
    timeout $((${TILES_END:-575} - SECONDS)) python3 examples/bench_linear.py --cudagraphs --recipes ${RECIPES:-quartet} 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    ;;
  speed)  # the kernels' bandwidth and the 1B training step with CUDA graphs (no tests: run `all` or `final` for those)
    timeout 150 python3 examples/bench_kernels.py --graphs 2>&1 | tee "$OUT/bench_kernels.log"
    timeout 400 python3 examples/bench_train.py --cudagraphs --recipes quartet,quartet2,nvidia --float8 rowwise --warmup 2 --steps 5 \
      --json "$OUT/bench_train.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train.log" | tail -12
    ;;
  step)  # is the small model's FP4 step slow in the quantize kernels, the GEMMs or elsewhere?
    if [ -n "${TESTS:-}" ]; then
      python3 -m pytest -q -p no:cacheprovider -rs $TESTS 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -6
    fi
    timeout 90 python3 examples/bench_kernels.py --graphs 2>&1 | tee "$OUT/bench_kernels.log"
    IFS='|' read -ra sweeps <<< "${SWEEPS:-}"  # tile sweeps, '|'-separated bench_kernels arguments (e.g. --only quartet2 --tiles 64x128x4,64x128x16)
    for a in "${sweeps[@]}"; do
      timeout ${SWEEP_S:-200} python3 examples/bench_kernels.py --graphs --sweep $a 2>&1 | tee -a "$OUT/bench_kernels_sweep.log"
    done
    timeout ${PROFILE_S:-330} python3 examples/profile_train.py --size ${SIZE:-20m} --recipes ${RECIPES:-bf16,quartet,quartet2} ${PROFILE_ARGS:-} 2>&1 \
      | grep -v -i warn | tee "$OUT/profile_train.log"
    ;;
  kcheck)  # a kernel change checked and timed in one call: its GPU tests (TESTS), the kernel table, the linear table (RECIPES)
    # a fresh machine compiles every kernel variant first: the four kernel/GPU test files took ~300 s in session 10
    timeout ${TESTS_S:-240} python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/kernels/test_quantize_kernels.py tests/kernels/test_triton_lowering.py tests/test_gpu.py} 2>&1 \
      | grep -v DEBUG | tee "$OUT/pytest.log" | tail -8
    timeout ${KERNELS_S:-100} python3 examples/bench_kernels.py --graphs ${KERNEL_ARGS:-} 2>&1 | tee "$OUT/bench_kernels.log"
    timeout $((${KCHECK_END:-575} - SECONDS)) python3 examples/bench_linear.py --cudagraphs --recipes ${RECIPES:-quartet,nvidia} 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    ;;
  tables)  # the issue's two speed tables on the current code in one call: linear layer at the 7B shapes, then the 1B step
    timeout 320 python3 examples/bench_linear.py --cudagraphs 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    timeout $((${TABLES_END:-575} - SECONDS)) python3 examples/bench_train.py --cudagraphs --recipes ${RECIPES:-quartet,quartet2,nvidia} \
      --float8 rowwise --warmup 2 --steps 5 --json "$OUT/bench_train.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train.log" | tail -12
    ;;
  all)  # kernel tests, kernel bandwidth (with the tile sweep), then the linear-layer table
    python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/kernels tests/test_gpu.py} 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log" | tail -8
    timeout 420 python3 examples/bench_linear.py --cudagraphs 2>&1 | grep -v -i warn | tee "$OUT/bench_linear.log"
    timeout 90 python3 examples/bench_kernels.py --graphs ${SWEEP:-} 2>&1 | tee "$OUT/bench_kernels.log"
    if [ -n "${TRAIN:-}" ]; then
      timeout "$TRAIN" python3 examples/bench_train.py --cudagraphs --recipes quartet --float8 '' --warmup 2 --steps 5 \
        --json "$OUT/bench_train.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_train.log" | tail -8
    fi
    ;;
esac
