// The FP8 W8A8 GEMM for decode batches (gemm_w8a8.cu): out [n, m] (+)= xq [n, k] @ wq [m, k]^T
// scaled by x_scale[token] w_scale[row] (+ bias), with e4m3 activations (quantize_tokens_e4m3)
// and an F8_B64 weight with one scale a row, for steps of a few tokens to a few dozen, where
// cuBLASLt's FP8 GEMM reads the weights at about half the copy bandwidth
// (docs/notes/fp8-gemm.md). The structs are plain values compared by their bytes (a step
// records its launches: step_graph.h), hence no padding.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/k_split.h"

namespace greta::cuda {

// The most tokens one launch takes (token tiles of up to 64).
constexpr int64_t kW8A8MaxTokens = 64;

// How one launch is cut (k_split.h): token tiles of 16, 32 or 64, row tiles of 64 * slabs rows over
// the segments one after the other, chunks of 64 values.
using W8A8GemmPlan = TiledGemmPlan;

// One weight of a launch: out [n, m] (+)= ... @ wq^T. Weights that read the same x (q, k and v;
// gate and up) share one launch as up to three segments.
struct W8A8Seg {
  const uint8_t* wq = nullptr;     // [m, k] e4m3 (the F8_B64 quant plane)
  const float* w_scale = nullptr;  // [m]
  const float* bias = nullptr;     // [m] or null
  bf16* out = nullptr;             // [n, m]
  int64_t m = 0;                   // 0: no such segment
};

struct W8A8GemmArgs {
  const uint8_t* xq = nullptr;     // [n, k] e4m3
  const float* x_scale = nullptr;  // [n]
  W8A8Seg seg0, seg1, seg2;
  float* scratch = nullptr;     // splits > 1: w8a8_gemm_scratch_floats(plan) partial sums
  int32_t* counters = nullptr;  // splits > 1: w8a8_gemm_counters(plan) arrivals, zero between launches
  int64_t k = 0;
  int64_t chunks_per_split = 0;  // set by w8a8_gemm from the plan
  int64_t blk1 = 0, blk2 = 0;    // set by w8a8_gemm: the first row tiles of segments 1 and 2
  int32_t n = 0;
  int32_t accumulate = 0;  // 1: out += result
};

// What a plan aims at; the defaults are the measured best (docs/notes/fp8-gemm.md), the
// benchmark tries others.
struct W8A8Tuning {
  int blocks_per_sm = 3;  // k is split until the launch has about this many blocks an SM ...
  int min_chunks = 8;     // ... with parts of at least this many 64-value chunks
  int slabs = 0;          // 16-row slabs a warp: 1 or 2 (0: 2, or 1 for 64-token tiles)
};

// The plan for n <= kW8A8MaxTokens tokens against weights of ms rows each (1 to 3 segments) and
// k columns (k % 64 == 0) on a device of n_sms SMs.
W8A8GemmPlan w8a8_gemm_plan(int64_t n, std::initializer_list<int64_t> ms, int64_t k, int n_sms, W8A8Tuning tune = {});
size_t w8a8_gemm_scratch_floats(const W8A8GemmPlan& p);
size_t w8a8_gemm_counters(const W8A8GemmPlan& p);
// k % 64 == 0 and the rows of xq and every wq 16-byte aligned; the segments in a.seg0.. with m > 0
// must be the ones the plan was made for.
void w8a8_gemm(W8A8GemmArgs a, W8A8GemmPlan plan, cudaStream_t s);

}  // namespace greta::cuda
