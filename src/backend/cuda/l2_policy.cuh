// L2 eviction priorities for the loads and copies that take a cache policy (createpolicy).
#pragma once
#include <cstdint>

namespace greta::cuda {

// evict_first: the lines a load or copy brings under this policy are the first the L2 evicts, for
// bytes read once (weight streams), so they do not push out what is read again (the KV cache,
// activations, the step's counters). Else the normal priority. Plain asm with no side effects, so
// a loop's calls fold into one.
__device__ __forceinline__ uint64_t l2_policy(bool evict_first) {
  uint64_t p;
  if (evict_first) asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  else asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
  return p;
}

}  // namespace greta::cuda
