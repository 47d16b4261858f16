// The persistent decode step's block (persistent_step.cu): one block per SM of kWarps warps,
// and what its device code shares.
#pragma once
#include "backend/cuda/persistent_step.h"

namespace greta::cuda::persistent {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kMaxGroup = 8;  // q heads a kv head
constexpr int kMaxTok = kPersistentMaxTokens;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace greta::cuda::persistent
