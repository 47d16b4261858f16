#!/usr/bin/env bash
# GPU check: from a clean checkout on a CUDA machine, build the CUDA backend and the CLI, then
# run the chosen steps. Each step is a tool with its own --help; this script only builds and
# dispatches. Logs and JSON lines go to $OUT (when set) or /tmp/gpu-check.
#
#   scripts/gpu-check.sh [steps...]    (default: build tests bench e2e hf)
#
#   build     configure and build greta_cuda, greta_cli, greta_gpu_tests and bench/gpu_*_bench
#             into $GRETA_GPU_BUILD (default build-gpu)
#   tests     greta_gpu_tests: every CUDA op and the whole model against the CPU backend
#   sanitize  compute-sanitizer memcheck, racecheck and synccheck over the op tests (GRETA_SANITIZE_FILTER)
#   bench     the kernel benchmarks (GRETA_BENCH=gemv: only gpu_gemv_bench), tools/kernel_bench_table.py
#   e2e       `greta bench` on synthetic Llama-2-7B / Llama-3-8B (bf16), output checked in the same run
#   profile   one batch-1 decode step kernel by kernel under Nsight Compute, tools/ncu_profile_step.py
#             (GRETA_PROFILE_POS: positions, default 16 4000)
#   graphs    decode with step graphs off, then on (GRETA_CUDA_GRAPHS), tools/ab_switch.py
#   pipe      decode with the pipelined GEMV weight stream off, then on (GRETA_CUDA_GEMV_PIPE)
#   persistent  the persistent decode step against the graph of kernels (GRETA_CUDA_PERSISTENT_DECODE
#             0/1, back to back) on synthetic Llama-2-7B (bf16, Q8_0, Q4_0) and Llama-3.2-1B, then its
#             per-phase profile (GRETA_CUDA_STEP_PROFILE) at positions 16 and 4000
#   ab        any switch: GRETA_AB_VAR takes each of GRETA_AB_VALUES in turn; GRETA_AB_ARGS are
#             greta bench's arguments (default batch 1 at position 4000 and batch 8);
#             GRETA_AB_PROFILE=1 adds the device time per decode step
#   serve     `greta serve` on synthetic Llama-3-8B under bench/serve_load.py, tools/serve_bench.py:
#             GRETA_SERVE_REQUESTS, _CONCURRENCY, _MAX_RUNNING, _KV_BLOCKS, _STEP_TOKENS, _PROCS,
#             _MAX_TIME, _DEVICE and GRETA_SERVE_SHORT_ONLY=1 set its flags of those names,
#             _MODEL sets --synthetic, _DTYPE --dtype, _STEP_TOKENS --max-step-tokens and _SCHEMA
#             --json-schema (a constrained load: FILE or `default`)
#   hf        a random Llama-2-7B saved by transformers, run by transformers and by greta
#
# Dependencies: nvcc, cmake, ninja. nlohmann-json, CLI11 and GoogleTest come from the system
# when all three are there, else from .gpu-deps/ (made by scripts/gpu-deps.sh on a machine that
# has them; GoogleTest is built from its sources). cpp-httplib (for `greta serve`) comes from
# the system through pkg-config, else from .gpu-deps/httplib; with .gpu-deps/httplib present
# the server is required, so a broken copy fails the build loudly. Only the GPU targets and the
# CLI are built, so a half-finished module elsewhere cannot break the GPU check.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
LOG=${OUT:-/tmp/gpu-check}
mkdir -p "$LOG"
BUILD=${GRETA_GPU_BUILD:-build-gpu}
GRETA=$BUILD/greta
JOBS=$(nproc)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build tests bench e2e hf)
has() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
export PATH=/usr/local/cuda/bin:$PATH
status=0

build_gtest() {  # GoogleTest from .gpu-deps/googletest into /tmp/gtest-prefix, once per machine
  [ -f /tmp/gtest-prefix/lib/libgtest.a ] || [ -f /tmp/gtest-prefix/lib64/libgtest.a ] && return 0
  echo "== building GoogleTest from .gpu-deps/googletest"
  { cmake -S .gpu-deps/googletest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
      -DCMAKE_INSTALL_PREFIX=/tmp/gtest-prefix && cmake --build /tmp/gtest-build -j "$JOBS" &&
      cmake --install /tmp/gtest-build; } > "$LOG/gtest-build.log" 2>&1 ||
    { echo "GoogleTest build failed: see $LOG/gtest-build.log"; tail -20 "$LOG/gtest-build.log"; exit 1; }
}

if has build; then
  prefix=""
  if [ -d .gpu-deps ] && ! { [ -d /usr/include/nlohmann ] && [ -d /usr/include/CLI ] && [ -d /usr/include/gtest ]; }; then
    build_gtest
    prefix="$ROOT/.gpu-deps;/tmp/gtest-prefix"
  fi
  server_args=()
  [ -f .gpu-deps/httplib/include/httplib.h ] &&
    server_args=(-DGRETA_SERVER=ON -DGRETA_HTTPLIB_ROOT="$ROOT/.gpu-deps/httplib")
  echo "== configure ($BUILD)"
  cmake -S . -B "$BUILD" -G Ninja -DGRETA_CUDA=ON -DCMAKE_BUILD_TYPE=Release "${server_args[@]}" \
    ${prefix:+-DCMAKE_PREFIX_PATH="$prefix"} > "$LOG/configure.log" 2>&1 ||
    { echo "configure failed"; tail -30 "$LOG/configure.log"; exit 1; }
  grep -E "GRETA (CUDA backend|HTTP server)|cpp-httplib from" "$LOG/configure.log" | sed 's/^-- /== /'
  targets="greta_cuda greta_cli"
  compgen -G "tests/gpu/*.cpp" > /dev/null && targets="$targets greta_gpu_tests"
  for b in bench/gpu_*.cu; do [ -f "$b" ] && targets="$targets $(basename "${b%.cu}")"; done
  echo "== build: $targets"
  # shellcheck disable=SC2086  # the target list is meant to split
  cmake --build "$BUILD" --target $targets -j "$JOBS" > "$LOG/build.log" 2>&1 ||
    { echo "build failed"; grep -E "error|Error" -A3 "$LOG/build.log" | head -60; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null |
  sed 's/^/== gpu: /'

if has tests && [ -x "$BUILD/greta_gpu_tests" ]; then
  echo "== greta_gpu_tests"
  "$BUILD/greta_gpu_tests" --gtest_color=no > "$LOG/tests.log" 2>&1 || status=1
  # The 40 largest relative errors (the value is the third field from the end), then the verdict.
  grep -E "^rel_err" "$LOG/tests.log" | awk '{print $(NF-2), $0}' | sort -g | tail -40 | cut -d' ' -f2-
  grep -E "^\[  (FAILED|SKIPPED) |^\[  PASSED|tests? ran|exception|Failure" "$LOG/tests.log" | head -40
fi

if has sanitize; then
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer --tool $tool (op tests)"
    # synccheck tracks a fixed number of barriers a block; the persistent step's weight ring has up
    # to 96 mbarriers (8 warps x 12 slots), set up in inline PTX where the tool cannot count them.
    # racecheck reports hazards inside cuBLASLt's own GEMM kernels (nvjet_*, the prefill's), which
    # are not ours to fix; they are left out so the check speaks of greta's kernels.
    extra=()
    [ "$tool" = synccheck ] && extra=(--num-cuda-barriers 96)
    [ "$tool" = racecheck ] && extra=(--kernel-name-exclude kns=nvjet)
    compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 9 "$BUILD/greta_gpu_tests" --gtest_color=no \
      --gtest_filter="${GRETA_SANITIZE_FILTER:--GpuOps.MatmulAwkwardShapesBf16:GpuAttention.LongContextDecode}" \
      > "$LOG/sanitize-$tool.log" 2>&1 || status=1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|tests? ran|FAILED" "$LOG/sanitize-$tool.log" | head -10
  done
fi

if has bench; then
  for b in "$BUILD"/gpu_${GRETA_BENCH:-*}_bench; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    echo "== $name"
    "$b" > "$LOG/$name.jsonl" 2> "$LOG/$name.err" || { status=1; cat "$LOG/$name.err"; }
  done
  python3 tools/kernel_bench_table.py "$LOG" || status=1
fi

if has e2e && [ -x "$GRETA" ]; then
  echo "== greta bench (end to end, synthetic models, bf16)"
  : > "$LOG/bench_e2e.jsonl"
  "$GRETA" bench --synthetic llama-2-7b --device cuda -p 16 -n 256 --at-pos 4000 --batch 8 32 128 \
    --prefill 512 2048 >> "$LOG/bench_e2e.jsonl" 2> "$LOG/bench_e2e.err" || { status=1; tail -5 "$LOG/bench_e2e.err"; }
  "$GRETA" bench --synthetic llama-3-8b --device cuda -p 16 -n 256 >> "$LOG/bench_e2e.jsonl" \
    2>> "$LOG/bench_e2e.err" || { status=1; tail -5 "$LOG/bench_e2e.err"; }
  python3 tools/bench_table.py "$LOG/bench_e2e.jsonl" || status=1
fi

# ab_switch NAME VAR "VALUES" [greta bench arguments...]: synthetic Llama-2-7B on the GPU, each
# value in turn, back to back; JSON lines in $LOG/bench_NAME.jsonl. ab_opts: more ab_switch.py flags.
ab_opts=()
ab_switch() {
  local name=$1 var=$2 values=$3; shift 3
  # shellcheck disable=SC2086  # the values are meant to split
  python3 tools/ab_switch.py --greta "$GRETA" --var "$var" --values $values --out "$LOG/bench_$name.jsonl" \
    "${ab_opts[@]}" -- --synthetic llama-2-7b --device cuda "$@" || status=1
}
if has profile && [ -x "$GRETA" ]; then
  echo "== decode step, kernel by kernel (ncu, synthetic llama-2-7b, bf16, batch 1)"
  # shellcheck disable=SC2086  # the positions are meant to split
  python3 tools/ncu_profile_step.py --greta "$GRETA" --out-dir "$LOG" --positions ${GRETA_PROFILE_POS:-16 4000} ||
    status=1
fi
if has graphs && [ -x "$GRETA" ]; then
  echo "== step graphs off vs on (GRETA_CUDA_GRAPHS 0/1, synthetic llama-2-7b, bf16, back to back)"
  ab_switch graphs GRETA_CUDA_GRAPHS "0 1 0 1" -p 16 -n 256 --batch 8 32
fi
if has pipe && [ -x "$GRETA" ]; then
  echo "== pipelined GEMV weight stream A/B (GRETA_CUDA_GEMV_PIPE 0/1, synthetic llama-2-7b, bf16, back to back)"
  ab_switch pipe GRETA_CUDA_GEMV_PIPE "0 1 0 1" -p 16 -n 256 --at-pos 4000 --batch 8
fi
if has persistent && [ -x "$GRETA" ]; then
  echo "== persistent decode step A/B (GRETA_CUDA_PERSISTENT_DECODE 0/1, synthetic llama-2-7b, bf16, back to back)"
  ab_switch persistent GRETA_CUDA_PERSISTENT_DECODE "0 1 0 1" -p 16 -n 256 --at-pos 4000 --batch 2 4
  for dt in q8_0 q4_0; do
    echo "== persistent decode step A/B, $dt weights"
    ab_switch "persistent_$dt" GRETA_CUDA_PERSISTENT_DECODE "0 1 0 1" --dtype "$dt" -p 16 -n 128 --batch 2
  done
  for v in 0 1; do
    GRETA_CUDA_PERSISTENT_DECODE=$v "$GRETA" bench --synthetic llama-3.2-1b --device cuda -p 16 -n 256 --batch 2 4 \
      2>> "$LOG/bench_persistent_1b.err" | sed "s/^{/{\"ab\":\"$v\",/" >> "$LOG/bench_persistent_1b.jsonl" ||
      status=1
  done
  python3 tools/bench_table.py "$LOG/bench_persistent_1b.jsonl" --ab-var GRETA_CUDA_PERSISTENT_DECODE || status=1
  for pos in 16 4000; do
    echo "== persistent decode step profile, position $pos"
    GRETA_CUDA_PERSISTENT_DECODE=1 GRETA_CUDA_STEP_PROFILE=1 "$GRETA" bench --synthetic llama-2-7b --device cuda \
      -p "$pos" -n 64 > /dev/null 2> "$LOG/persistent_profile_$pos.err" || status=1
    grep -A18 "persistent decode step" "$LOG/persistent_profile_$pos.err"
  done
fi
if has ab && [ -x "$GRETA" ]; then
  echo "== A/B of $GRETA_AB_VAR over: $GRETA_AB_VALUES (synthetic llama-2-7b, bf16, back to back)"
  [ "${GRETA_AB_PROFILE:-0}" = 1 ] && ab_opts=(--step-profile)
  # shellcheck disable=SC2086  # the arguments are meant to split
  ab_switch "ab_$GRETA_AB_VAR" "$GRETA_AB_VAR" "$GRETA_AB_VALUES" ${GRETA_AB_ARGS:--p 16 -n 256 --at-pos 4000 --batch 8}
fi

if has hf && [ -x "$GRETA" ]; then
  echo "== transformers vs greta (random-weight Llama-2-7B checkpoint)"
  python3 tools/compare_transformers.py --greta "$GRETA" --shape llama-2-7b --out /tmp/greta-hf-random \
    2> "$LOG/compare_transformers.err" | tee "$LOG/compare_transformers.json" || status=1
  rm -rf /tmp/greta-hf-random
fi

if has serve; then
  short=()
  [ "${GRETA_SERVE_SHORT_ONLY:-0}" = 1 ] && short=(--short-only)
  echo "== greta serve under load (synthetic ${GRETA_SERVE_MODEL:-llama-3-8b}, ${GRETA_SERVE_DTYPE:-bf16}, ignore_eos, loopback)"
  python3 tools/serve_bench.py --greta "$GRETA" --out-dir "$LOG" --synthetic "${GRETA_SERVE_MODEL:-llama-3-8b}" \
    --dtype "${GRETA_SERVE_DTYPE:-bf16}" ${GRETA_SERVE_SCHEMA:+--json-schema "$GRETA_SERVE_SCHEMA"} \
    --device "${GRETA_SERVE_DEVICE:-cuda}" --requests "${GRETA_SERVE_REQUESTS:-1024}" \
    --concurrency "${GRETA_SERVE_CONCURRENCY:-256}" ${GRETA_SERVE_MAX_RUNNING:+--max-running "$GRETA_SERVE_MAX_RUNNING"} \
    --kv-blocks "${GRETA_SERVE_KV_BLOCKS:-16384}" --max-step-tokens "${GRETA_SERVE_STEP_TOKENS:-2048}" \
    ${GRETA_SERVE_PROCS:+--procs "$GRETA_SERVE_PROCS"} --max-time "${GRETA_SERVE_MAX_TIME:-200}" "${short[@]}" ||
    status=1
fi
exit $status
