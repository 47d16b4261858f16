// Split-K by blocks: each block of a tile writes its partial sums to global scratch, and the last
// one to arrive adds them up. This is the arrival: every thread of the block calls it after its
// stores; it returns true in the last block of `arrivals`, with the others' stores visible, and
// leaves the counter at zero for the next launch (which starts after this grid ends).
#pragma once
#include <cstdint>

namespace greta::cuda {

__device__ __forceinline__ bool last_to_arrive(int32_t* counter, int arrivals) {
  __threadfence();
  __syncthreads();
  __shared__ int s_last;
  if (threadIdx.x == 0) {
    s_last = atomicAdd(counter, 1) == arrivals - 1;
    if (s_last) *counter = 0;
  }
  __syncthreads();
  const bool last = s_last;
  if (last) __threadfence();
  return last;
}

}  // namespace greta::cuda
