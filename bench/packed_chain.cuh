// The Llama-2-7B chain of matrices the packed-weight benchmarks time (gpu_packed_gemv_bench,
// gpu_packed_gemm_bench): q/k/v 12288 x 4096, o 4096 x 4096, gate/up 22016 x 4096, down 4096 x
// 11008, 32 layers of distinct weights in format T, so a chain reads far more than L2 holds.
// Weights are random bytes with small positive fp16 words in the scale planes (sums stay
// finite), AWQ/GPTQ zero points under 16 as real files have them; x is a fixed pattern.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/quant_planes.h"
#include "core/dtype.h"

namespace greta::cuda::packed_chain {

struct Shape {
  const char* name;
  int64_t m, k;
};
constexpr Shape kShapes[] = {{"qkv", 12288, 4096}, {"o", 4096, 4096}, {"gate_up", 22016, 4096}, {"down", 4096, 11008}};
constexpr int kLayers = 32;

__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = uint8_t(h);
  }
}
// Scale planes: every 16-bit word a small positive fp16 (2^-7 .. 2^-6).
__global__ void fill_scales(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2246822519u ^ seed;
    h ^= h >> 13;
    p[i] = uint16_t(0x2000u | (h & 0x3ffu));
  }
}
// Byte 2 of every 4-byte I4_G* record is its zero point: under 16, where the random bytes reach
// 255 (a min of -255 d, far from any real file, where the GEMV's bf16 min rounding shows).
__global__ void int4_zero_points(uint8_t* sc, size_t records) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < records; i += size_t(gridDim.x) * blockDim.x)
    sc[4 * i + 2] &= 0x0f;
}
__global__ void fill_x(bf16* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __float2bfloat16_rn(float(int((i * 37) % 201) - 100) / 100.f);
}

// The weights of every (shape, layer), one allocation each: w[shape][layer].
struct Weights {
  std::vector<std::vector<void*>> w;
  size_t bytes = 0;           // the whole chain's
  double flop_per_token = 0;  // 2 m k summed over the chain
  Weights(const Weights&) = delete;
  Weights& operator=(const Weights&) = delete;
  Weights(DType t, cudaStream_t st) : w(std::size(kShapes), std::vector<void*>(kLayers)) {
    for (size_t si = 0; si < std::size(kShapes); ++si) {
      const Shape& sh = kShapes[si];
      const QuantPlanes P = quant_planes(t, sh.m, sh.k);
      for (int l = 0; l < kLayers; ++l) {
        GRETA_CUDA_CHECK(cudaMalloc(&w[si][size_t(l)], P.total));
        auto* b = static_cast<uint8_t*>(w[si][size_t(l)]);
        fill_bytes<<<1024, 256, 0, st>>>(b, P.total, uint32_t(97 * si + size_t(l)));
        // Q6_K's d plane too (fp16 super-block scales).
        fill_scales<<<256, 256, 0, st>>>(reinterpret_cast<uint16_t*>(b + P.sc), (P.total - P.sc) / 2,
                                         uint32_t(si + 31 * size_t(l)));
        if (int4_format(t)) int4_zero_points<<<256, 256, 0, st>>>(b + P.sc, size_t(sh.m) * plane_sc_row(t, sh.k) / 4);
        bytes += P.total;
        flop_per_token += 2.0 * double(sh.m) * double(sh.k);
      }
    }
    GRETA_CUDA_CHECK(cudaGetLastError());
  }
  ~Weights() {
    for (auto& per_shape : w)
      for (void* p : per_shape) cudaFree(p);
  }
  void* at(int shape, int layer) const { return w[size_t(shape)][size_t(layer)]; }
};

// Relative L2 difference of two bf16 device arrays of `count` values (b the reference); infinite
// when either holds a non-finite value.
inline double rel_diff(const bf16* a_dev, const bf16* b_dev, size_t count) {
  std::vector<uint16_t> a(count), b(count);
  GRETA_CUDA_CHECK(cudaMemcpy(a.data(), a_dev, count * 2, cudaMemcpyDeviceToHost));
  GRETA_CUDA_CHECK(cudaMemcpy(b.data(), b_dev, count * 2, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < count; ++i) {
    const float fa = bf16_to_float(a[i]), fb = bf16_to_float(b[i]);
    if (!std::isfinite(fa) || !std::isfinite(fb)) return INFINITY;
    num += double(fa - fb) * (fa - fb);
    den += double(fb) * fb;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace greta::cuda::packed_chain
