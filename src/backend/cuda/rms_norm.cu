// RMSNorm: out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, one block per row, fp32 math.
// The row is read twice (sum of squares, then scale); the second read hits L1/L2 since a
// row is at most a few tens of KB.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

constexpr int kThreads = 256;

// x, out [n, dim]; w [dim] (f32). vec8: dim % 8 == 0 and rows 16-byte aligned.
template <bool kVec8>
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(const bf16* x, const float* __restrict__ w, float eps, bf16* out, int64_t dim) {
  pdl_allow_dependents();
  pdl_wait();
  const bf16* xr = x + blockIdx.x * dim;
  bf16* orow = out + blockIdx.x * dim;
  float ss = 0.f;
  if (kVec8) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      const uint4 v = *reinterpret_cast<const uint4*>(xr + i);
      const bf16* p = reinterpret_cast<const bf16*>(&v);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float f = __bfloat162float(p[j]);
        ss += f * f;
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      const float f = __bfloat162float(xr[i]);
      ss += f * f;
    }
  }
  __shared__ float part[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += part[i];
  const float inv = rsqrtf(total / float(dim) + eps);
  // All reads of this row happen before any write (the barrier above), so out may alias x.
  if (kVec8) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      const uint4 v = *reinterpret_cast<const uint4*>(xr + i);
      const bf16* p = reinterpret_cast<const bf16*>(&v);
      uint4 o;
      bf16* po = reinterpret_cast<bf16*>(&o);
#pragma unroll
      for (int j = 0; j < 8; ++j) po[j] = __float2bfloat16_rn(__bfloat162float(p[j]) * inv * w[i + j]);
      *reinterpret_cast<uint4*>(orow + i) = o;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads)
      orow[i] = __float2bfloat16_rn(__bfloat162float(xr[i]) * inv * w[i]);
  }
}

}  // namespace

void rms_norm(const bf16* x, const float* w, float eps, bf16* out, int64_t n, int64_t dim, cudaStream_t s) {
  if (n <= 0) return;
  const bool vec = dim % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  launch_pdl(vec ? rms_norm_kernel<true> : rms_norm_kernel<false>, dim3(unsigned(n)), dim3(kThreads), 0, s, x, w, eps,
             out, dim);
}

}  // namespace greta::cuda
