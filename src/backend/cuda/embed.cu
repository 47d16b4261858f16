// Row gather: out[j] = table[idx[j]]. Serves embed (table = token embedding) and
// gather_rows (table = activations). One block per output row, 16-byte copies when aligned.
// Indices were range-checked on the host before upload.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

__global__ void gather_vec8(const uint4* __restrict__ table, const int32_t* __restrict__ idx, uint4* __restrict__ out,
                            int64_t cols8) {
  pdl_allow_dependents();
  pdl_wait();
  const uint4* src = table + int64_t(idx[blockIdx.x]) * cols8;
  uint4* dst = out + int64_t(blockIdx.x) * cols8;
  for (int64_t i = threadIdx.x; i < cols8; i += blockDim.x) dst[i] = src[i];
}

__global__ void gather_scalar(const bf16* __restrict__ table, const int32_t* __restrict__ idx, bf16* __restrict__ out,
                              int64_t cols) {
  pdl_allow_dependents();
  pdl_wait();
  const bf16* src = table + int64_t(idx[blockIdx.x]) * cols;
  bf16* dst = out + int64_t(blockIdx.x) * cols;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

void gather_rows(const bf16* table, const int32_t* idx, bf16* out, int64_t n, int64_t cols, cudaStream_t s) {
  if (n <= 0) return;
  const bool vec = cols % 8 == 0 && (reinterpret_cast<uintptr_t>(table) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  if (vec)
    launch_pdl(gather_vec8, dim3(unsigned(n)), dim3(128), 0, s, reinterpret_cast<const uint4*>(table), idx,
               reinterpret_cast<uint4*>(out), cols / 8);
  else launch_pdl(gather_scalar, dim3(unsigned(n)), dim3(128), 0, s, table, idx, out, cols);
}

}  // namespace greta::cuda
