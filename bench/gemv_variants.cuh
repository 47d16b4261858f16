// The GEMV kernel's measured variants, for the GEMV benchmark only: the production entry points
// (src/backend/cuda/gemv.cu) call the chosen instantiation directly. Variant numbers:
//   2 / 4         register loads in flight per row per lane (plain launch)
//   1602 / 1604   the same with 16 warps per block
//   200           PDL launch (production, unpipelined)
//   220 / 240     PDL with the pipelined weight stream, 2 / 4 chunks per stage (220: production)
//   302           split-K over 2 blocks per row tile, PDL
//   0             the any-shape fallback kernel
// More than one token tile (n > 8) runs the production tiling for every variant but 302.
// Measured slower and removed (docs/notes/gemv.md): a cp.async-pipelined variant, L2 prefetch
// before the PDL wait, split-K pipelined.
#pragma once
#include "backend/cuda/gemv_kernel.cuh"

namespace greta::cuda {

// Split-K workspace of variant 302, owned by the benchmark.
struct GemvSplitWorkspace {
  float* scratch = nullptr;
  int32_t* count = nullptr;  // zero between launches (the kernel leaves it zero)
  size_t cap_floats = 0, cap_counters = 0;
  ~GemvSplitWorkspace() {
    cudaFree(scratch);
    cudaFree(count);
  }
  void reserve(int64_t m, int n, cudaStream_t s) {
    if (gemv_split_scratch_floats(m, n) <= cap_floats && gemv_split_counters(m) <= cap_counters) return;
    GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
    GRETA_CUDA_CHECK(cudaFree(scratch));
    GRETA_CUDA_CHECK(cudaFree(count));
    cap_floats = gemv_split_scratch_floats(m, n);
    cap_counters = gemv_split_counters(m);
    GRETA_CUDA_CHECK(cudaMalloc(&scratch, cap_floats * sizeof(float)));
    GRETA_CUDA_CHECK(cudaMalloc(&count, cap_counters * sizeof(int32_t)));
    GRETA_CUDA_CHECK(cudaMemset(count, 0, cap_counters * sizeof(int32_t)));
  }
};

inline void gemv_variant(int variant, const bf16* x, const bf16* w, const float* bias, bf16* out, int n, int64_t m,
                         int64_t k, GemvSplitWorkspace& ws, cudaStream_t s) {
  if (m <= 0 || n <= 0) return;
  if (!gemv_fast_path(x, w, n, k) || variant == 0) {
    launch_fallback(x, w, bias, out, n, m, k, s);
    return;
  }
  GemvArgs a = single(x, w, bias, out, n, m, k);
  a.pipeline = variant == 220 ? 1 : 0;
  if (n > 8 && variant != 302) {
    launch_tiles<kNormNone, kEpiStore>(a, 0.f, s);
    return;
  }
  switch (variant) {
    case 2: launch_mma<2, kLaunchPlain>(a, s); break;
    case 4: launch_mma<4, kLaunchPlain>(a, s); break;
    case 1602: launch_mma<2, kLaunchPlain, 16>(a, s); break;
    case 1604: launch_mma<4, kLaunchPlain, 16>(a, s); break;
    case 200: launch_mma<2, kLaunchPdl>(a, s); break;
    case 220: launch_mma<2, kLaunchPipe>(a, s); break;
    case 240: launch_mma<4, kLaunchPipe>(a, s); break;
    case 302: {
      ws.reserve(m, n, s);
      a.split = 2;
      a.split_scratch = ws.scratch;
      a.split_count = ws.count;
      launch_tiles<kNormNone, kEpiStore, 2>(a, 0.f, s);
      break;
    }
    default: launch_mma<2, kLaunchPlain>(a, s); break;
  }
}

}  // namespace greta::cuda
