// The batched GEMM over packed weights (gemm_packed.cu): out [n, m] (+)= x [n, k] @ w [m, k]^T
// with w in a format kept packed on the device (quant_planes.h), for steps of more tokens than
// the decode GEMV takes and fewer than a prefill. Both structs are plain values compared by
// their bytes (a step records its launches: step_graph.h), hence no padding.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/k_split.h"
#include "core/dtype.h"

namespace greta::cuda {

// How one GEMM is cut (k_split.h): token tiles of 16 or 32, row tiles of 64 * slabs rows, chunks of
// the format's 32 * kSub values.
using PackedGemmPlan = TiledGemmPlan;

struct PackedGemmArgs {
  const bf16* x = nullptr;      // [n, k]
  const void* w = nullptr;      // the packed planes of an [m, k] weight
  bf16* out = nullptr;          // [n, m]
  float* scratch = nullptr;     // splits > 1: packed_gemm_scratch_floats(plan) partial sums
  int32_t* counters = nullptr;  // splits > 1: packed_gemm_counters(plan) arrivals, zero between launches
  int64_t m = 0, k = 0;
  int64_t chunks_per_split = 0;  // set by packed_gemm from the plan
  int32_t n = 0;
  int32_t accumulate = 0;  // 1: out += result (rounded to bf16 first)
};

// The plan for n tokens against an [m, k] weight of format t on a device of n_sms SMs.
PackedGemmPlan packed_gemm_plan(DType t, int64_t n, int64_t m, int64_t k, int n_sms);
size_t packed_gemm_scratch_floats(const PackedGemmPlan& p);
size_t packed_gemm_counters(const PackedGemmPlan& p);
// k % 256 == 0 for the K-quants, k a whole number of the format's blocks otherwise, and
// k % 16 == 0 (granules whole), as the upload checks.
void packed_gemm(DType t, PackedGemmArgs a, PackedGemmPlan plan, cudaStream_t s);

}  // namespace greta::cuda
