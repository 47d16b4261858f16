#!/usr/bin/env bash
# GPU check: from a clean checkout on a CUDA machine, build the CUDA backend, run the GPU op
# tests and the kernel benchmark, print a short table.
#
#   scripts/gpu-check.sh [steps...]     steps: build tests sanitize bench e2e profile ab skip graphs fusion pipe serve hf (default: build tests bench e2e hf)
#   bench: every bench/gpu_*_bench.cu (GRETA_BENCH=gemv: only gpu_gemv_bench).
#   e2e: `greta bench` on synthetic Llama-2-7B / Llama-3-8B shapes (bf16), output checked in the same run.
#   profile: one batch-1 decode step of synthetic Llama-2-7B (positions 16 and 4000, or
#            GRETA_PROFILE_POS) kernel by kernel under ncu (time alone, DRAM bytes, % of copy),
#            against the step time without it; GRETA_CUDA_FUSION / GRETA_CUDA_GEMV_PIPE tag the files.
#   hf: a random Llama-2-7B saved by transformers, run by transformers and by greta (needs torch + transformers).
#   graphs: synthetic Llama-2-7B decode (batch 1, 8, 32) with step graphs off, then on (GRETA_CUDA_GRAPHS).
#   fusion: synthetic Llama-2-7B decode (batch 1, 8) at GRETA_CUDA_FUSION=0, 1, 2, 3, twice, with the step profile.
#   ab: any switch: GRETA_AB_VAR takes each of GRETA_AB_VALUES in turn (GRETA_AB_ARGS: greta bench's
#       arguments, default batch 1, position 4000 and batch 8).
#   skip: synthetic Llama-2-7B decode (batch 1, position 4000) without the RMSNorm and/or attention
#         kernels (GRETA_CUDA_SKIP), twice: what each costs inside the step graph.
#   pipe: synthetic Llama-2-7B decode (batch 1, 8, position 4000) with GRETA_CUDA_GEMV_PIPE=0, 1, twice.
#   serve: `greta serve --synthetic llama-3-8b` (bf16) on the GPU under bench/serve_load.py: N streaming
#          clients on loopback, 128-in/128-out then 512-in/256-out, ignore_eos (issue 4's load figure).
#          GRETA_SERVE_REQUESTS (default 1024) and GRETA_SERVE_CONCURRENCY (default 256) change the load
#          (GRETA_SERVE_MAX_RUNNING, default the concurrency, GRETA_SERVE_KV_BLOCKS, default 16384, and
#          GRETA_SERVE_STEP_TOKENS, default 2048, the engine);
#          GRETA_SERVE_MODEL (default llama-3-8b) and GRETA_SERVE_DEVICE (default cuda) let the same step
#          run on a CPU with the tiny model (GRETA_GPU_BUILD=build GRETA_SERVE_MODEL=tiny GRETA_SERVE_DEVICE=cpu).
#          GRETA_SERVE_SHORT_ONLY=1 runs the 128/128 workload alone; GRETA_SERVE_PROCS sets the
#          load client's processes (serve_load.py --procs; default up to 8).
#          GRETA_SERVE_MAX_TIME (default 200 s) bounds each workload's timed run (its warm-up too), so
#          start + both workloads fit the device tool's 10-minute command; requests cut off by it
#          count as errors in the JSON line (and the step fails), never silently.
#
# Logs and JSON lines go to $OUT (the device tool's return folder) or /tmp/gpu-check.
# Dependencies: nvcc + cmake + ninja. nlohmann-json, CLI11 and GoogleTest are taken from the
# system when all three are present (the device image had them on 2026-11-26), else from
# .gpu-deps/ (made by scripts/gpu-deps.sh on a machine that has them, carried along with the
# device tool's `carry` argument; GoogleTest is built from its sources). cpp-httplib (for
# `greta serve`) comes from the system through pkg-config, else from .gpu-deps/httplib; with
# .gpu-deps/httplib present the server is required, so a broken copy fails the build loudly.
# Only the GPU targets and the CLI are built (greta_cuda, greta_cli, greta_gpu_tests,
# gpu_*_bench), so a half-finished module elsewhere cannot break the GPU check.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=${OUT:-/tmp/gpu-check}
mkdir -p "$LOG"
BUILD=${GRETA_GPU_BUILD:-build-gpu}
JOBS=$(nproc)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build tests bench e2e hf)
has() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
export PATH=/usr/local/cuda/bin:$PATH
status=0

if has build; then
  prefix=""
  if [ -d .gpu-deps ] && ! { [ -d /usr/include/nlohmann ] && [ -d /usr/include/CLI ] && [ -d /usr/include/gtest ]; }; then
    prefix="$ROOT/.gpu-deps"
    if [ ! -f /tmp/gtest-prefix/lib/libgtest.a ] && [ ! -f /tmp/gtest-prefix/lib64/libgtest.a ]; then
      echo "== building GoogleTest from .gpu-deps/googletest"
      cmake -S .gpu-deps/googletest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/tmp/gtest-prefix > "$LOG/gtest-build.log" 2>&1 &&
        cmake --build /tmp/gtest-build -j "$JOBS" >> "$LOG/gtest-build.log" 2>&1 &&
        cmake --install /tmp/gtest-build >> "$LOG/gtest-build.log" 2>&1 ||
        { echo "GoogleTest build failed: see $LOG/gtest-build.log"; tail -20 "$LOG/gtest-build.log"; exit 1; }
    fi
    prefix="$prefix;/tmp/gtest-prefix"
  fi
  server_args=()
  if [ -f .gpu-deps/httplib/include/httplib.h ]; then
    server_args=(-DGRETA_SERVER=ON -DGRETA_HTTPLIB_ROOT="$ROOT/.gpu-deps/httplib")
  fi
  echo "== configure ($BUILD)"
  cmake -S . -B "$BUILD" -G Ninja -DGRETA_CUDA=ON -DCMAKE_BUILD_TYPE=Release "${server_args[@]}" \
    ${prefix:+-DCMAKE_PREFIX_PATH="$prefix"} > "$LOG/configure.log" 2>&1 ||
    { echo "configure failed"; tail -30 "$LOG/configure.log"; exit 1; }
  grep -E "GRETA (CUDA backend|HTTP server)|cpp-httplib from" "$LOG/configure.log" | sed 's/^-- /== /'
  targets="greta_cuda greta_cli"
  compgen -G "tests/gpu/*.cpp" > /dev/null && targets="$targets greta_gpu_tests"
  for b in bench/gpu_*.cu; do [ -f "$b" ] && targets="$targets $(basename "${b%.cu}")"; done
  echo "== build: $targets"
  # shellcheck disable=SC2086
  cmake --build "$BUILD" --target $targets -j "$JOBS" > "$LOG/build.log" 2>&1 ||
    { echo "build failed"; grep -E "error|Error" -A3 "$LOG/build.log" | head -60; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null | sed 's/^/== gpu: /'

if has tests && [ -x "$BUILD/greta_gpu_tests" ]; then
  echo "== greta_gpu_tests"
  "$BUILD/greta_gpu_tests" --gtest_color=no > "$LOG/tests.log" 2>&1 || status=1
  # The 40 largest relative errors (value is the third field from the end), then the verdict.
  grep -E "^rel_err" "$LOG/tests.log" | awk '{print $(NF-2), $0}' | sort -g | tail -40 | cut -d' ' -f2-
  grep -E "^\[  (FAILED|SKIPPED) |^\[  PASSED|tests? ran|exception|Failure" "$LOG/tests.log" | head -40
fi

if has sanitize; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool (op tests)"
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/greta_gpu_tests" --gtest_color=no \
      --gtest_filter="${GRETA_SANITIZE_FILTER:--GpuOps.MatmulAwkwardShapesBf16:GpuAttention.LongContextDecode}" > "$LOG/sanitize-$tool.log" 2>&1 || status=1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|tests? ran|FAILED" "$LOG/sanitize-$tool.log" | head -10
  done
fi

if has bench; then
  for b in "$BUILD"/gpu_${GRETA_BENCH:-*}_bench; do
    [ -x "$b" ] || continue
    echo "== $(basename "$b")"
    "$b" > "$LOG/$(basename "$b").jsonl" 2> "$LOG/$(basename "$b").err" || { status=1; cat "$LOG/$(basename "$b").err"; }
  done
  python3 - "$LOG" <<'PY'
import json, sys, glob, os
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "gpu_*_bench.jsonl"))):
    for line in open(f):
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
for r in rows:
    if r["bench"] in ("device", "copy", "read"):
        print(" ".join(f"{k}={v}" for k, v in r.items() if k != "bench"), f"[{r['bench']}]")
best = {}
for r in rows:
    if r["bench"] != "gemv":
        continue
    key = (r["shape"], r["m"], r["k"], r["n"])
    if key not in best or r["us"] < best[key]["us"]:
        best[key] = r
blas = {(r["shape"], r["m"], r["k"], r["n"]): r for r in rows if r["bench"] == "cublas_gemm"}
print(f"{'shape':20s} {'m':>6s} {'k':>6s} {'n':>2s} {'unroll':>6s} {'us':>8s} {'GB/s':>7s} {'%copy':>6s} {'%read':>6s} {'rel_err':>8s} {'cublas%':>7s} ok")
for key, r in best.items():
    b = blas.get(key, {})
    print(f"{r['shape']:20s} {r['m']:6d} {r['k']:6d} {r['n']:2d} {r['unroll']:6d} {r['us']:8.2f} {r['GBps']:7.0f} "
          f"{r['pct_copy']:6.1f} {r['pct_read']:6.1f} {r['rel_err']:8.1e} {b.get('pct_copy', 0):7.1f} {r['ok']}")
for r in rows:
    if r["bench"] not in ("device", "copy", "read", "gemv", "cublas_gemm"):
        print(json.dumps(r))
PY
fi
if has e2e && [ -x "$BUILD/greta" ]; then
  echo "== greta bench (end to end, synthetic models, bf16)"
  : > "$LOG/bench_e2e.jsonl"
  "$BUILD/greta" bench --synthetic llama-2-7b --device cuda -p 16 -n 256 --at-pos 4000 --batch 8 32 128 \
    --prefill 512 2048 >> "$LOG/bench_e2e.jsonl" 2> "$LOG/bench_e2e.err" || { status=1; tail -5 "$LOG/bench_e2e.err"; }
  "$BUILD/greta" bench --synthetic llama-3-8b --device cuda -p 16 -n 256 >> "$LOG/bench_e2e.jsonl" \
    2>> "$LOG/bench_e2e.err" || { status=1; tail -5 "$LOG/bench_e2e.err"; }
  python3 - "$LOG/bench_e2e.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    what = r["measure"] + (f" b{r['batch']}" if r["batch"] > 1 else "") + f" p{r['prompt_len']}"
    speed = f"{r['tokens_per_s']:9.1f} tok/s"
    extra = f"ttft {r['ttft_ms']:.1f} ms" if "ttft_ms" in r else f"{r.get('pct_of_bandwidth', 0):5.1f}% of {r.get('device_bandwidth_gb_s', 0):.0f} GB/s"
    print(f"{r['model']:24s} {what:24s} {speed} {extra:28s} check {r['check']} (max diff {r['check_max_logit_diff']:.3g})")
PY
fi
# A/B of one environment switch: VAR takes each value of VALUES in turn (back to back, so both
# sides see the same machine), `greta bench --synthetic llama-2-7b ARGS...` each time; prints a table.
# AB_PROFILE=1 also prints the device time per step (the profile syncs every step, so not for
# the graphs A/B, where launch overhead is the thing measured). AB_MAY_FAIL=1: a failed output
# check is expected (GRETA_CUDA_SKIP) and does not fail the step.
ab_switch() {
  local var=$1 values=$2 name=$3; shift 3
  : > "$LOG/bench_$name.jsonl"
  local v
  for v in $values; do
    env "$var=$v" ${AB_PROFILE:+GRETA_CUDA_STEP_PROFILE=1} "$BUILD/greta" bench --synthetic llama-2-7b --device cuda "$@" \
      2>> "$LOG/bench_$name.err" | sed "s/^{/{\"ab\": \"$v\", /" >> "$LOG/bench_$name.jsonl" ||
      [ "${AB_MAY_FAIL:-0}" = 1 ] || { status=1; tail -5 "$LOG/bench_$name.err"; }
  done
  grep "step profile" "$LOG/bench_$name.err" || true
  python3 - "$LOG/bench_$name.jsonl" "$var" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "tokens_per_s" not in r:
        continue
    what = r["measure"] + (f" b{r['batch']}" if r["batch"] > 1 else "")
    print(f"{sys.argv[2]}={r['ab']} {what:20s} {r['tokens_per_s']:9.1f} tok/s "
          f"{r.get('pct_of_bandwidth', 0):5.1f}% of {r.get('device_bandwidth_gb_s', 0):.0f} GB/s check {r['check']}")
PY
}
# One decode step of synthetic Llama-2-7B (batch 1, short context and position 4000) kernel by
# kernel under Nsight Compute: time alone, DRAM bytes, % of copy bandwidth, against the step time
# measured without the profiler (tools/ncu_step_table.py).
if has profile && [ -x "$BUILD/greta" ]; then
  tag=${GRETA_CUDA_GEMV_PIPE:+_pipe$GRETA_CUDA_GEMV_PIPE}${GRETA_CUDA_FUSION:+_fusion$GRETA_CUDA_FUSION}
  echo "== decode step, kernel by kernel (ncu, synthetic llama-2-7b, bf16, batch 1${tag:+, $tag})"
  ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | head -1)
  for p in ${GRETA_PROFILE_POS:-16 4000}; do
    "$BUILD/greta" bench --synthetic llama-2-7b --device cuda -p "$p" -n 64 -r 2 > "$LOG/profile_p$p$tag.jsonl" \
      2> "$LOG/profile_p$p$tag.err" || { status=1; tail -5 "$LOG/profile_p$p$tag.err"; continue; }
    read -r copy step_us < <(python3 -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.startswith("{") and "tokens_per_s" in l][0]
print(r["device_bandwidth_gb_s"], 1e6/r["tokens_per_s"])' "$LOG/profile_p$p$tag.jsonl")
    "$ncu_bin" --clock-control none --cache-control none --csv --page raw --print-units base \
      --kernel-name-base function --kernel-name 'regex:gemv|rms_norm|decode_|sample_kernel|gather|binary|add_bias' \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__registers_per_thread \
      "$BUILD/greta" bench --synthetic llama-2-7b --device cuda -p "$p" -n 3 -r 1 > "$LOG/ncu_p$p$tag.csv" \
      2> "$LOG/ncu_p$p$tag.err" || { status=1; tail -5 "$LOG/ncu_p$p$tag.err"; continue; }
    echo "-- position $p (copy $copy GB/s)"
    python3 tools/ncu_step_table.py "$LOG/ncu_p$p$tag.csv" --copy-gbs "$copy" --step-us "$step_us" || status=1
  done
fi
if has graphs && [ -x "$BUILD/greta" ]; then
  echo "== step graphs off vs on (synthetic llama-2-7b, bf16, same machine, back to back)"
  ab_switch GRETA_CUDA_GRAPHS "0 1 0 1" graphs -p 16 -n 256 --batch 8 32
fi
if has pipe && [ -x "$BUILD/greta" ]; then
  echo "== pipelined GEMV weight stream A/B (GRETA_CUDA_GEMV_PIPE 0/1, synthetic llama-2-7b, bf16, back to back)"
  ab_switch GRETA_CUDA_GEMV_PIPE "0 1 0 1" pipe -p 16 -n 256 --at-pos 4000 --batch 8
  echo "== RMSNorm inside the GEMVs (GRETA_CUDA_FUSION 1/2) with the pipelined GEMV"
  ab_switch GRETA_CUDA_FUSION "1 2 1 2" fusion12 -p 16 -n 256 --batch 8
fi
if has ab && [ -x "$BUILD/greta" ]; then
  echo "== A/B of $GRETA_AB_VAR over: $GRETA_AB_VALUES (synthetic llama-2-7b, bf16, back to back)"
  # shellcheck disable=SC2086  # the arguments are meant to split
  ab_switch "$GRETA_AB_VAR" "$GRETA_AB_VALUES" "ab_$GRETA_AB_VAR" ${GRETA_AB_ARGS:--p 16 -n 256 --at-pos 4000 --batch 8}
fi
if has skip && [ -x "$BUILD/greta" ]; then
  echo "== leave-one-out: the step without its RMSNorm and/or attention kernels (GRETA_CUDA_SKIP; output wrong on purpose)"
  AB_MAY_FAIL=1 ab_switch GRETA_CUDA_SKIP "none norm attn norm,attn none norm attn norm,attn" skip -p 16 -n 256 --at-pos 4000
fi
if has fusion && [ -x "$BUILD/greta" ]; then
  echo "== fusion levels A/B (GRETA_CUDA_FUSION 0/1/2/3, synthetic llama-2-7b, bf16, back to back)"
  AB_PROFILE=1 ab_switch GRETA_CUDA_FUSION "0 1 2 3 0 1 2 3" fusion -p 16 -n 128 --batch 8
fi
if has hf && [ -x "$BUILD/greta" ]; then
  echo "== transformers vs greta (random-weight Llama-2-7B checkpoint)"
  python3 tools/compare_transformers.py --greta "$BUILD/greta" --shape llama-2-7b --out /tmp/greta-hf-random \
    2> "$LOG/compare_transformers.err" | tee "$LOG/compare_transformers.json" || status=1
  rm -rf /tmp/greta-hf-random
fi
if has serve; then
  serve_model=${GRETA_SERVE_MODEL:-llama-3-8b}
  serve_device=${GRETA_SERVE_DEVICE:-cuda}
  echo "== greta serve under load (synthetic $serve_model, bf16, $serve_device, ignore_eos, loopback)"
  if [ ! -x "$BUILD/greta" ] || ! "$BUILD/greta" serve --help > /dev/null 2>&1; then
    echo "serve: FAILED: $BUILD/greta has no 'serve' (built without cpp-httplib? run scripts/gpu-deps.sh here" \
         "and carry .gpu-deps, then the build step)"
    exit 1
  fi
  # ~256 sequences at once on an 80 GB card: weights 16 GB; KV (bf16) 128 KiB a token, so 16384
  # blocks of 16 tokens = 32 GiB hold 256 x (512 + 256) tokens with a third to spare. A step
  # carries every running sequence's decode token plus up to 1792 prompt tokens.
  # Port 0: the server takes a free one and prints it, so a leftover server elsewhere on the
  # machine can never answer for ours.
  # GRETA_SERVE_MAX_RUNNING (default: the concurrency) and GRETA_SERVE_KV_BLOCKS size the engine
  # for other concurrencies (512 clients: 24576 blocks = 48 GiB of KV).
  n_req=${GRETA_SERVE_REQUESTS:-1024}
  conc=${GRETA_SERVE_CONCURRENCY:-256}
  "$BUILD/greta" serve --synthetic "$serve_model" --device "$serve_device" --port 0 \
    --max-running "${GRETA_SERVE_MAX_RUNNING:-$conc}" --kv-blocks "${GRETA_SERVE_KV_BLOCKS:-16384}" \
    --max-step-tokens "${GRETA_SERVE_STEP_TOKENS:-2048}" --max-queue 4096 --http-threads $((conc + 64)) \
    > "$LOG/serve.out" 2> "$LOG/serve.err" &
  server=$!
  # Up means /health answers 200 on the port the server printed; the synthetic 8B weights are
  # generated and uploaded first. Prints the port.
  if ! port=$(python3 - "$LOG/serve.out" "$server" <<'PY'
import os, re, sys, time, urllib.request
out, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("greta serve exited before answering /health")
    if os.path.exists(f"/proc/{pid}/stat") and open(f"/proc/{pid}/stat").read().split()[2] == "Z":
        sys.exit("greta serve exited before answering /health")
    m = re.search(r"listening on http://[^:]+:(\d+)/", open(out).read())
    try:
        if m and urllib.request.urlopen(f"http://127.0.0.1:{m[1]}/health", timeout=2).status == 200:
            print(m[1])
            sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit("greta serve did not answer /health within 600 s")
PY
  ); then
    echo "serve: FAILED: the server did not start; the end of $LOG/serve.err:"
    tail -20 "$LOG/serve.err"
    kill "$server" 2> /dev/null; wait "$server" 2> /dev/null
    exit 1
  fi
  head -3 "$LOG/serve.err" | sed 's/^/== /'
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  [ "$serve_device" = cpu ] && gpu="cpu ($(nproc) cores)"
  : > "$LOG/serve_load.jsonl"
  # Different seeds: the second workload's prompts share no prefix with the first's.
  for w in "128 128 0" "512 256 1"; do
    read -r p g seed <<< "$w"
    [ "$p" = 512 ] && [ "${GRETA_SERVE_SHORT_ONLY:-0}" = 1 ] && continue
    PYTHONUNBUFFERED=1 python3 bench/serve_load.py --url "http://127.0.0.1:$port" --device-name "${gpu:-cuda}" \
      --requests "$n_req" --concurrency "$conc" --prompt-tokens "$p" --max-tokens "$g" --ignore-eos \
      --seed "$seed" --warmup "$conc" --request-timeout 600 ${GRETA_SERVE_PROCS:+--procs "$GRETA_SERVE_PROCS"} --max-time "${GRETA_SERVE_MAX_TIME:-200}" \
      >> "$LOG/serve_load.jsonl" 2>> "$LOG/serve_load.err" || { status=1; tail -5 "$LOG/serve_load.err"; }
  done
  kill -TERM "$server"; wait "$server" || true
  python3 - "$LOG/serve_load.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    print(f"{r['device']}: {r['N']} x {r['P']}-in/{r['G']}-out, {r['C']} clients: "
          f"{r['output_tok_per_s']} output tok/s, {r['requests_per_s']} req/s, "
          f"TTFT p50/p99 {r['ttft_ms_p50']}/{r['ttft_ms_p99']} ms, ITL p50/p99 {r['itl_ms_p50']}/{r['itl_ms_p99']} ms, "
          f"{r['completed']} done, {r['errors']} errors, {r.get('preemptions', '?')} preemptions")
    print(json.dumps(r))
PY
fi
exit $status
