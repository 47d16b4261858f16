// Programmatic dependent launch (PDL, sm_90): a kernel that calls pdl_allow_dependents() lets
// the next kernel in the stream -- if that one was launched with the programmatic
// serialization attribute (the decode GEMV is) -- start early and prefetch its weights while
// this one finishes. The dependent still waits for this grid's completion (griddepcontrol.wait)
// before reading its outputs, so calling this is always safe; kernels call it first thing.
#pragma once

namespace greta::cuda {

__device__ __forceinline__ void pdl_allow_dependents() { asm volatile("griddepcontrol.launch_dependents;"); }

}  // namespace greta::cuda
