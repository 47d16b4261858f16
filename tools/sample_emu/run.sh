#!/usr/bin/env bash
# Runs the real src/backend/cuda/sample.cu on the CPU, under a host emulation of the CUDA
# primitives it uses (cuda_emu.h: one OS thread per CUDA thread, barriers for __syncthreads
# and the warp intrinsics), against the host Sampler. For checking the kernel's logic on a
# machine without a GPU; the GPU tests (tests/gpu/test_gpu_sample.cpp) are the real check.
#   tools/sample_emu/run.sh BUILD_DIR [grid]
# BUILD_DIR: a configured build holding libgreta_core.a (e.g. a CPU-only build). With `grid`,
# runs the u-grid inversion check instead of the distribution check (slow: ~5 minutes).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:?usage: run.sh BUILD_DIR [grid]}"
out="$(mktemp -d)"
# The kernel file without its CUDA includes, launched through the emulator instead of <<<>>>.
sed -e '/#include/d' \
    -e 's/sample_kernel<<<unsigned(rows), kThreads, 0, s>>>(logits, vocab, params, tokens, probs, dist);/emu_launch(unsigned(rows), kThreads, [\&] { sample_kernel(logits, vocab, params, tokens, probs, dist); });/' \
    "$root/src/backend/cuda/sample.cu" > "$out/sample_emu.inc"
grep -q emu_launch "$out/sample_emu.inc" || { echo "run.sh: the launch line in sample.cu changed; update the sed" >&2; exit 1; }
g++ -std=c++20 -O1 -I"$out" -I"$root/tools/sample_emu" -I"$root/src" -I"$root/include" \
    "$root/tools/sample_emu/check_sample.cpp" "$build/libgreta_core.a" -lpthread -o "$out/check_sample"
"$out/check_sample" ${2:+"$2"}
