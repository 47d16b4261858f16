// Gemma's elementwise ops on bf16 activations, math in fp32: GeGLU's gelu(gate) * up (gelu with
// the tanh approximation), the scaling of the token embeddings by sqrt(dim), and Gemma 2's
// final-logit soft-capping cap * tanh(x / cap). One value per
// thread in a grid-stride loop: any count and alignment.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

__device__ float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoef = 0.044715f;
  return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * x * (1.f + kCoef * x * x)));
}

__global__ void gelu_mul_kernel(const bf16* gate, const bf16* up, bf16* out, int64_t n) {
  pdl_allow_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(gelu_tanh(__bfloat162float(gate[i])) * __bfloat162float(up[i]));
}

__global__ void scale_kernel(const bf16* x, float s, bf16* out, int64_t n) {
  pdl_allow_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * s);
}

__global__ void softcap_kernel(const bf16* x, float cap, bf16* out, int64_t n) {
  pdl_allow_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(cap * tanhf(__bfloat162float(x[i]) / cap));
}

unsigned grid_for(int64_t work) { return unsigned(std::min<int64_t>((work + 255) / 256, 132 * 16)); }

}  // namespace

void gelu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  launch_pdl(gelu_mul_kernel, dim3(grid_for(count)), dim3(256), 0, s, gate, up, out, count);
}

void scale(const bf16* x, float factor, bf16* out, int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  launch_pdl(scale_kernel, dim3(grid_for(count)), dim3(256), 0, s, x, factor, out, count);
}

void softcap(const bf16* x, float cap, bf16* out, int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  launch_pdl(softcap_kernel, dim3(grid_for(count)), dim3(256), 0, s, x, cap, out, count);
}

}  // namespace greta::cuda
