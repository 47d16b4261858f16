// Elementwise ops on bf16 activations: add, silu_mul, bias add, bf16 -> f32. Math in fp32.
// A thread handles 8 values (one 16-byte load per operand) when the count and all pointers
// allow it, else one value; both paths are grid-stride loops so any count works.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct SiluMulOp {  // silu(g) * u = g / (1 + e^-g) * u
  __device__ float operator()(float g, float u) const { return g / (1.f + __expf(-g)) * u; }
};

template <class Op>
__global__ void binary_vec8(const uint4* a, const uint4* b, uint4* out, int64_t n8, Op op) {
  pdl_allow_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    uint4 va = a[i], vb = b[i], vo;
    const bf16* pa = reinterpret_cast<const bf16*>(&va);
    const bf16* pb = reinterpret_cast<const bf16*>(&vb);
    bf16* po = reinterpret_cast<bf16*>(&vo);
#pragma unroll
    for (int j = 0; j < 8; ++j) po[j] = __float2bfloat16_rn(op(__bfloat162float(pa[j]), __bfloat162float(pb[j])));
    out[i] = vo;
  }
}

template <class Op>
__global__ void binary_scalar(const bf16* a, const bf16* b, bf16* out, int64_t n, Op op) {
  pdl_allow_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(op(__bfloat162float(a[i]), __bfloat162float(b[i])));
}

__global__ void add_bias_kernel(bf16* out, const float* __restrict__ bias, int64_t total, int64_t m) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(__bfloat162float(out[i]) + bias[i % m]);
}

__global__ void bf16_to_f32_kernel(const bf16* __restrict__ x, float* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(x[i]);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
unsigned grid_for(int64_t work) { return unsigned(std::min<int64_t>((work + 255) / 256, 132 * 16)); }

template <class Op>
void binary(const bf16* a, const bf16* b, bf16* out, int64_t n, cudaStream_t s, Op op) {
  if (n <= 0) return;
  if (n % 8 == 0 && aligned16(a) && aligned16(b) && aligned16(out)) {
    launch_pdl(binary_vec8<Op>, dim3(grid_for(n / 8)), dim3(256), 0, s, reinterpret_cast<const uint4*>(a),
               reinterpret_cast<const uint4*>(b), reinterpret_cast<uint4*>(out), n / 8, op);
  } else {
    launch_pdl(binary_scalar<Op>, dim3(grid_for(n)), dim3(256), 0, s, a, b, out, n, op);
  }
}

}  // namespace

void add(const bf16* a, const bf16* b, bf16* out, int64_t count, cudaStream_t s) {
  binary(a, b, out, count, s, AddOp{});
}
void silu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t count, cudaStream_t s) {
  binary(gate, up, out, count, s, SiluMulOp{});
}
void add_bias_rows(bf16* out, const float* bias, int64_t n, int64_t m, cudaStream_t s) {
  if (n * m <= 0) return;
  add_bias_kernel<<<grid_for(n * m), 256, 0, s>>>(out, bias, n * m, m);
  GRETA_CUDA_LAUNCH_CHECK();
}
void bf16_to_f32(const bf16* x, float* out, int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  bf16_to_f32_kernel<<<grid_for(count), 256, 0, s>>>(x, out, count);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace greta::cuda
