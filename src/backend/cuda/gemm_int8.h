// The int8 GEMM over packed GGUF weights for decode batches (gemm_int8.cu): out [n, m] (+)=
// x [n, k] @ w [m, k]^T with w in one of GGUF's formats with a scale per 32 values (Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, Q4_K, Q5_K) kept packed on the device (quant_planes.h) and x quantized to int8 per 32 values
// (quantize_int8_acts), both fed to the int8 tensor cores; each group's weight and activation
// scales apply once to the group's int32 sum. This is the arithmetic of llama.cpp's MMQ kernels
// and of the CPU backend's quantized matmuls. The structs are plain values compared by their
// bytes (a step records its launches: step_graph.h), hence no padding.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/k_split.h"
#include "core/dtype.h"

namespace greta::cuda {

// The most tokens one launch takes (token tiles of up to 64).
constexpr int64_t kInt8GemmMaxTokens = 64;
// k is walked in chunks of 4 groups.
constexpr int64_t kInt8GemmChunk = 128;

// The formats the int8 GEMM reads: a scale (and a min) per 32-value group. (Q6_K's scales are
// per 16 values, half an mma's k.)
constexpr bool int8_gemm_format(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 ||
         t == DType::Q4_K || t == DType::Q5_K;
}

// x [n, k] quantized per 32 values: q = round(x * 127 / amax) with d = amax / 127, and the exact
// sum of the group's 32 x values (the formats with a min multiply it). Stored for the GEMM's
// loads, over rows = int8_acts_rows(n) tokens (the ones past n zero):
//   q    [k / 128][rows][128] bytes: a 128-value chunk of every token together, lane t's 32
//        bytes at 32 t, group j's 8 of them at 8 ((j + token) % 4) (gemm_int8.cu, fragment
//        order; the rotation keeps shared-memory reads free of bank conflicts)
//   d    [k / 32][rows] floats: a group's scales of adjacent tokens together
//   sum  [k / 32][rows] floats
struct Int8Acts {
  uint8_t* q = nullptr;
  float* d = nullptr;
  float* sum = nullptr;
};
constexpr int64_t int8_acts_rows(int64_t n) {
  return (n + kInt8GemmMaxTokens - 1) / kInt8GemmMaxTokens * kInt8GemmMaxTokens;
}
// Bytes of an Int8Acts for n tokens of k values, and where its parts lie in such a buffer.
size_t int8_acts_bytes(int64_t n, int64_t k);
Int8Acts int8_acts_at(void* base, int64_t n, int64_t k);

// How one GEMM is cut (k_split.h): token tiles of 16, 32 or 64, row tiles of 64 * slabs rows, chunks
// of 128 values.
using Int8GemmPlan = TiledGemmPlan;

// What a plan aims at; the defaults are what the design predicts (docs/notes/quantized-weights.md),
// the benchmark tries others.
struct Int8GemmTuning {
  int blocks_per_sm = 3;  // k is split until the launch has about this many blocks an SM ...
  int min_chunks = 4;     // ... with parts of at least this many 128-value chunks
  int slabs = 0;          // 16-row slabs a warp: 1 or 2 (0: 2, or 1 for 64-token tiles)
};

struct Int8GemmArgs {
  Int8Acts x;                   // x, quantized by quantize_int8_acts
  const void* w = nullptr;      // the packed planes of an [m, k] weight
  bf16* out = nullptr;          // [n, m]
  float* scratch = nullptr;     // splits > 1: int8_gemm_scratch_floats(plan) partial sums
  int32_t* counters = nullptr;  // splits > 1: int8_gemm_counters(plan) arrivals, zero between launches
  int64_t m = 0, k = 0;
  int64_t chunks_per_split = 0;  // set by int8_gemm from the plan
  int32_t n = 0;
  int32_t accumulate = 0;  // 1: out += result (rounded to bf16 first)
  int32_t rows = 0;        // set by int8_gemm: int8_acts_rows(n)
  int32_t unused_ = 0;     // keeps the struct free of tail padding
};

// True when the int8 GEMM takes format t with rows of k values.
constexpr bool int8_gemm_takes(DType t, int64_t k) { return int8_gemm_format(t) && k > 0 && k % kInt8GemmChunk == 0; }

// x [n, k] bf16 (rows 16-byte aligned) into `a` for weights of format t (the 4-bit formats
// order each word's bytes as their nibbles unpack). k % 128 == 0.
void quantize_int8_acts(DType t, const bf16* x, int64_t n, int64_t k, Int8Acts a, cudaStream_t s);

// The plan for n <= kInt8GemmMaxTokens tokens against an [m, k] weight on a device of n_sms SMs.
Int8GemmPlan int8_gemm_plan(int64_t n, int64_t m, int64_t k, int n_sms, Int8GemmTuning tune = {});
size_t int8_gemm_scratch_floats(const Int8GemmPlan& p);
size_t int8_gemm_counters(const Int8GemmPlan& p);
// int8_gemm_takes(t, a.k); the plan made for (a.n, a.m, a.k).
void int8_gemm(DType t, Int8GemmArgs a, Int8GemmPlan plan, cudaStream_t s);

}  // namespace greta::cuda
