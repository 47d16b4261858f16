// The persistent decode step's block (persistent_step.cu): one block per SM of kWarps warps,
// and what its device code shares.
#pragma once
#include "backend/cuda/persistent_step.h"

namespace greta::cuda::persistent {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kMaxGroup = 8;  // q heads a kv head
constexpr int kMaxTok = kPersistentMaxTokens;

// The step's values a token that every attention phase reads, copied into shared memory when the
// launch starts (they do not change during it): each phase wait's acquire poll empties the SM's
// L1, so read from global memory they cost a round trip to L2 at every layer, ahead of the item's
// other loads. kTableBlocks: block-table entries a token kept (its first positions' blocks).
constexpr int kTableBlocks = 32;
struct StepTokens {
  int32_t seq[kMaxTok], pos[kMaxTok], slot[kMaxTok];
  int32_t blocks[kMaxTok][kTableBlocks];  // the sequence's first block ids, 0 past its table
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace greta::cuda::persistent
