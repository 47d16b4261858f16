// Programmatic dependent launch (PDL, sm_90). Every kernel of the decode step is launched
// with the programmatic-serialization attribute (launch_pdl) and follows one protocol:
//   1. pdl_allow_dependents() first thing: the next kernel in the stream may start now;
//   2. pdl_wait() before the first read of anything an earlier kernel wrote (and before any
//      write at all): it returns once the previous grid has completed and its memory is visible.
// So a kernel's blocks are resident and waiting when its predecessor drains, instead of being
// launched only after it ends (the ~2-3 us gap that every kernel boundary otherwise costs).
// Why it is safe: no kernel writes before its wait, so an early start cannot disturb the
// predecessor; completion is transitive (each grid completes only after its own wait), so a
// kernel also sees everything written before its predecessor. A kernel launched without the
// attribute (cuBLASLt, prefill kernels) makes the next one wait for it in full, as usual, and
// pdl_wait() in a kernel launched without the attribute returns at once.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

__device__ __forceinline__ void pdl_allow_dependents() { asm volatile("griddepcontrol.launch_dependents;"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// kernel<<<grid, block, smem, s>>>(args...) with the PDL attribute; checked.
template <class... KP, class... A>
void launch_pdl(void (*kernel)(KP...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  GRETA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...));
}

}  // namespace greta::cuda
