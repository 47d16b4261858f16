#!/usr/bin/env bash
# A/B of two trees on one GPU machine, in one run: this tree and a baseline tree (a folder with
# the baseline's sources, made here with `git archive REV | tar -x -C .base` and carried to the
# device with .gpu-deps, see scripts/gpu-deps.sh). Builds both (this tree with its GPU tests),
# runs the GPU tests, then alternates the two `greta bench` binaries back to back (base, new,
# base, new) so both see the same card and clocks. JSON lines, tagged with the tree in their "ab" field, go to
# $OUT/e2e.jsonl (or /tmp/gpu-ab); tools/bench_table.py reads them.
#
#   scripts/gpu-ab.sh BASE_DIR [greta bench arguments...]
#   (default arguments: --synthetic llama-2-7b -p 16 -n 256 --at-pos 4000 --batch 8 --prefill 2048)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BASE=${1:?usage: scripts/gpu-ab.sh BASE_DIR [greta bench arguments...]}
shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--synthetic llama-2-7b -p 16 -n 256 --at-pos 4000 --batch 8 --prefill 2048)
LOG=${OUT:-/tmp/gpu-ab}
mkdir -p "$LOG"
export PATH=/usr/local/cuda/bin:$PATH
deps=(-DGRETA_SERVER=ON -DGRETA_HTTPLIB_ROOT="$ROOT/.gpu-deps/httplib" -DCMAKE_PREFIX_PATH="$ROOT/.gpu-deps;/tmp/gtest-prefix")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -f /tmp/gtest-prefix/lib/libgtest.a ] && [ ! -f /tmp/gtest-prefix/lib64/libgtest.a ]; then
  { cmake -S .gpu-deps/googletest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
      -DCMAKE_INSTALL_PREFIX=/tmp/gtest-prefix && cmake --build /tmp/gtest-build -j 8 &&
      cmake --install /tmp/gtest-build; } > "$LOG/gtest.log" 2>&1 || { echo "GoogleTest build failed"; exit 1; }
fi
( cmake -S "$BASE" -B build-ab-base -G Ninja -DGRETA_CUDA=ON -DGRETA_TESTS=OFF -DCMAKE_BUILD_TYPE=Release "${deps[@]}" &&
    cmake --build build-ab-base --target greta_cli -j 6 ) > "$LOG/base-build.log" 2>&1 ||
  { echo "baseline build failed"; tail -20 "$LOG/base-build.log"; } &
{ cmake -S . -B build-ab-new -G Ninja -DGRETA_CUDA=ON -DCMAKE_BUILD_TYPE=Release "${deps[@]}" &&
    cmake --build build-ab-new --target greta_cli greta_gpu_tests -j 10; } > "$LOG/new-build.log" 2>&1 ||
  { echo "build failed"; grep -E "error" -A3 "$LOG/new-build.log" | head -40; }
echo "== new tree built at ${SECONDS}s"
build-ab-new/greta_gpu_tests --gtest_color=no > "$LOG/tests.log" 2>&1
echo "== GPU tests: exit $? at ${SECONDS}s"
grep -E "^\[  (FAILED|PASSED) |tests? ran|Failure" "$LOG/tests.log" | head -20
wait
: > "$LOG/e2e.jsonl"
for t in base new base new; do
  "build-ab-$t/greta" bench --device cuda "${args[@]}" 2>> "$LOG/e2e-$t.err" | sed "s/^{/{\"ab\":\"$t\",/" >> "$LOG/e2e.jsonl"
  echo "== $t done at ${SECONDS}s"
done
python3 tools/bench_table.py --ab-var tree "$LOG/e2e.jsonl"
