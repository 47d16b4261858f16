// The two small kernels around the FP8 tensor-core GEMM (LtGemm::run_fp8, W8A8): the weight's
// per-row scales, found once at upload, and the activations' per-token e4m3 quantization, run
// before every GEMM. docs/notes/fp8-gemm.md says why this layout (one scale per weight row, one
// per token: cuBLASLt's OUTER_VEC mode, the fastest it has on sm_90).
#include <cuda_fp8.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

constexpr float kE4M3Max = 448.f;
constexpr int kQuantThreads = 256;

// One warp per row of the F8_B64 scale plane ([m][k / 64] fp32): row_scale[r] = the row's scale
// when all of its blocks share it (bit for bit), and a count of the rows where they do not.
__global__ void f8_row_scales_kernel(const float* __restrict__ sc, int64_t m, int64_t blocks,
                                     float* __restrict__ row_scale, int32_t* __restrict__ mixed) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= m) return;
  const float* s = sc + r * blocks;
  const uint32_t first = __float_as_uint(s[0]);
  bool same = true;
  for (int64_t b = lane; b < blocks; b += 32) same &= __float_as_uint(s[b]) == first;
  same = __all_sync(0xffffffffu, same);
  if (lane == 0) {
    row_scale[r] = __uint_as_float(first);
    if (!same) atomicAdd(mixed, 1);
  }
}

__device__ __forceinline__ float block_max(float a) {
  __shared__ float part[kQuantThreads / 32];
  for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = a;
  __syncthreads();
  a = 0.f;
#pragma unroll
  for (int w = 0; w < kQuantThreads / 32; ++w) a = fmaxf(a, part[w]);
  return a;
}

// One block per token: s = amax / 448 (1 for a row of zeros), q = e4m3(x / s) rounded to nearest
// even and saturated, 8 values a thread a step (k % 16 == 0, rows 16-byte aligned). The division
// is a true one, so q is exactly what the CPU's float_to_fp8_e4m3(x / s) gives. Launched with PDL
// (pdl.cuh): it is resident as the kernel before it drains, and a PDL-aware GEMM after it (the
// W8A8 kernel) requests its first weights while it runs.
__global__ void __launch_bounds__(kQuantThreads)
    quantize_tokens_e4m3_kernel(const bf16* __restrict__ x, int64_t k, uint8_t* __restrict__ q,
                                float* __restrict__ scale) {
  pdl_allow_dependents();
  pdl_wait();  // x is the previous kernel's output
  const bf16* xr = x + blockIdx.x * k;
  uint8_t* qr = q + blockIdx.x * k;
  float a = 0.f;
  for (int64_t j = threadIdx.x * 8; j < k; j += kQuantThreads * 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(xr + j);
    const __nv_bfloat162* v = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(v[e]);
      a = fmaxf(a, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
  const float amax = block_max(a);
  const float s = amax > 0.f ? amax / kE4M3Max : 1.f;
  for (int64_t j = threadIdx.x * 8; j < k; j += kQuantThreads * 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(xr + j);
    const __nv_bfloat162* v = reinterpret_cast<const __nv_bfloat162*>(&u);
    uint32_t o[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t word = 0;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float2 f = __bfloat1622float2(v[2 * h + e]);
        const __nv_fp8x2_storage_t two = __nv_cvt_float2_to_fp8x2(make_float2(__fdiv_rn(f.x, s), __fdiv_rn(f.y, s)),
                                                                  __NV_SATFINITE, __NV_E4M3);
        word |= uint32_t(two) << (16 * e);
      }
      o[h] = word;
    }
    *reinterpret_cast<uint2*>(qr + j) = make_uint2(o[0], o[1]);
  }
  if (threadIdx.x == 0) scale[blockIdx.x] = s;
}

}  // namespace

void f8_row_scales(const void* w, int64_t m, int64_t k, float* row_scale, int32_t* mixed, cudaStream_t s) {
  const QuantPlanes P = quant_planes(DType::F8_B64, m, k);
  const auto* sc = reinterpret_cast<const float*>(static_cast<const uint8_t*>(w) + P.sc);
  constexpr int kRowsPerBlock = 8;
  f8_row_scales_kernel<<<unsigned((m + kRowsPerBlock - 1) / kRowsPerBlock), kRowsPerBlock * 32, 0, s>>>(
      sc, m, k / 64, row_scale, mixed);
  GRETA_CUDA_LAUNCH_CHECK();
}

void quantize_tokens_e4m3(const bf16* x, int64_t n, int64_t k, uint8_t* q, float* scale, cudaStream_t s) {
  if (n <= 0) return;
  launch_pdl(quantize_tokens_e4m3_kernel, dim3(unsigned(n)), dim3(kQuantThreads), 0, s, x, k, q, scale);
}

}  // namespace greta::cuda
