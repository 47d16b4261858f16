// Weight conversion at upload: plain (F32/F16/BF16) and block formats (GGUF's Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; Hugging Face F8_B64, I4_G*) -> bf16, on the GPU, so a 7B model
// loads at PCIe speed rather than at single-thread host dequantization speed. Block formats come
// here only when CudaOptions::packed_weights is off (else they stay packed: quant_repack.cu).
// The block layouts are byte for byte core/quant_blocks.h's; each formula mirrors
// greta::dequantize_row, which the GPU tests compare against. Blocks may be only 2-byte aligned
// (34-byte Q8_0 blocks), so scales are read as 16-bit words and quants as bytes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {
namespace {

__device__ __forceinline__ float h2f(const uint8_t* p) {  // fp16 stored little-endian at p
  const uint16_t bits = uint16_t(p[0]) | uint16_t(p[1]) << 8;
  return __half2float(__ushort_as_half(bits));
}

// One thread per 32-value group (a Q8_0/Q4_0/Q4_1 block, or a 32-value sub-block of Q4_K).
__global__ void dequant32_kernel(DType t, const uint8_t* __restrict__ src, bf16* __restrict__ dst, int64_t n_groups) {
  const int64_t gidx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (gidx >= n_groups) return;
  bf16* y = dst + gidx * 32;
  if (t == DType::Q8_0) {
    const uint8_t* b = src + gidx * 34;
    const float d = h2f(b);
    for (int i = 0; i < 32; ++i) y[i] = __float2bfloat16_rn(d * float(int8_t(b[2 + i])));
  } else if (t == DType::Q4_0) {
    const uint8_t* b = src + gidx * 18;
    const float d = h2f(b);
    for (int i = 0; i < 16; ++i) {
      y[i] = __float2bfloat16_rn(d * float(int(b[2 + i] & 15) - 8));
      y[i + 16] = __float2bfloat16_rn(d * float(int(b[2 + i] >> 4) - 8));
    }
  } else if (t == DType::Q4_1) {
    const uint8_t* b = src + gidx * 20;
    const float d = h2f(b), m = h2f(b + 2);
    for (int i = 0; i < 16; ++i) {
      y[i] = __float2bfloat16_rn(d * float(b[4 + i] & 15) + m);
      y[i + 16] = __float2bfloat16_rn(d * float(b[4 + i] >> 4) + m);
    }
  } else if (t == DType::Q5_0 || t == DType::Q5_1) {
    // Bit i of qh is value i's fifth bit; value = d*(q - 16) or d*q + m.
    const bool one = t == DType::Q5_1;
    const uint8_t* b = src + gidx * (one ? 24 : 22);
    const float d = h2f(b), m = one ? h2f(b + 2) : 0.f;
    const uint8_t* qh = b + (one ? 4 : 2);
    const uint32_t h = uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
    const uint8_t* qs = qh + 4;
    for (int i = 0; i < 32; ++i) {
      const int q = ((qs[i % 16] >> (4 * (i / 16))) & 15) | int((h >> i) & 1u) << 4;
      y[i] = __float2bfloat16_rn(one ? d * float(q) + m : d * float(q - 16));
    }
  } else if (t == DType::Q4_K || t == DType::Q5_K) {
    // Sub-block j of super-block sb: value = d*sc*q - dmin*mn, q = nibble (low for even j), plus
    // for Q5_K bit j of qh[l] as the fifth bit.
    const bool five = t == DType::Q5_K;
    const int64_t sb = gidx / 8;
    const int j = int(gidx % 8);
    const uint8_t* b = src + sb * (five ? 176 : 144);
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t* s = b + 4;
    int sc, mn;
    if (j < 4) {
      sc = s[j] & 63;
      mn = s[j + 4] & 63;
    } else {
      sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
      mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    const float ds = d * float(sc), dm = dmin * float(mn);
    const uint8_t* q = b + (five ? 48 : 16) + 32 * (j / 2);
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      const int hi = five ? ((b[16 + l] >> j) & 1) << 4 : 0;
      y[l] = __float2bfloat16_rn(ds * float(((q[l] >> shift) & 15) | hi) - dm);
    }
  }
}

// Q6_K: one thread per (super-block, half h, l in 0..31) writes values 128h + l + {0,32,64,96}.
__global__ void dequant_q6k_kernel(const uint8_t* __restrict__ src, bf16* __restrict__ dst, int64_t n_threads) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (tid >= n_threads) return;
  const int64_t sb = tid / 64;
  const int h = int(tid % 64) / 32, l = int(tid % 32);
  const uint8_t* b = src + sb * 210;
  const uint8_t* ql = b + 64 * h;
  const uint8_t* qh = b + 128 + 32 * h;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * h;
  const float d = h2f(b + 208);
  const int is = l / 16;
  const int q1 = int((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
  const int q2 = int((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
  const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
  const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
  bf16* y = dst + sb * 256 + 128 * h;
  y[l] = __float2bfloat16_rn(d * float(sc[is]) * float(q1));
  y[l + 32] = __float2bfloat16_rn(d * float(sc[is + 2]) * float(q2));
  y[l + 64] = __float2bfloat16_rn(d * float(sc[is + 4]) * float(q3));
  y[l + 96] = __float2bfloat16_rn(d * float(sc[is + 6]) * float(q4));
}

// Hugging Face blocks (core/quant_blocks.h), one thread per 32 values: F8_B64 (64 fp8 e4m3 and a
// float scale) and I4_G* (fp16 d, byte zero point, nibbles as Q4_0 per 32-value run).
__global__ void dequant_hf_kernel(DType t, const uint8_t* __restrict__ src, bf16* __restrict__ dst, int64_t n_groups) {
  const int64_t gidx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (gidx >= n_groups) return;
  bf16* y = dst + gidx * 32;
  if (t == DType::F8_B64) {
    const uint8_t* b = src + (gidx / 2) * 68;
    float scale;
    memcpy(&scale, b, 4);
    const uint8_t* q = b + 4 + 32 * (gidx % 2);
    for (int i = 0; i < 32; ++i)
      y[i] = __float2bfloat16_rn(scale * __half2float(__half(__nv_cvt_fp8_to_halfraw(q[i], __NV_E4M3))));
    return;
  }
  const int g = t == DType::I4_G32 ? 32 : t == DType::I4_G64 ? 64 : 128;
  const int64_t per = g / 32;  // 32-value runs a block
  const uint8_t* b = src + (gidx / per) * (4 + g / 2);
  const float d = h2f(b);
  const int z = b[2];
  const uint8_t* q = b + 4 + 16 * (gidx % per);
  for (int j = 0; j < 16; ++j) {
    y[j] = __float2bfloat16_rn(d * float(int(q[j] & 15) - z));
    y[j + 16] = __float2bfloat16_rn(d * float(int(q[j] >> 4) - z));
  }
}

__global__ void plain_kernel(DType t, const void* __restrict__ src, bf16* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (t == DType::F32) dst[i] = __float2bfloat16_rn(static_cast<const float*>(src)[i]);
    else if (t == DType::F16) dst[i] = __float2bfloat16_rn(__half2float(static_cast<const __half*>(src)[i]));
    else dst[i] = static_cast<const bf16*>(src)[i];
  }
}

unsigned blocks_for(int64_t n, int per) { return unsigned((n + per - 1) / per); }

}  // namespace

// Every block type has a kernel below; of the plain types, the float ones.
bool convert_supported(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || is_quantized(t); }

void convert_to_bf16(DType t, const void* src, bf16* dst, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const auto* b = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      plain_kernel<<<std::min<unsigned>(blocks_for(n, 256), 132 * 16), 256, 0, s>>>(t, src, dst, n);
      break;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K: dequant32_kernel<<<blocks_for(n / 32, 128), 128, 0, s>>>(t, b, dst, n / 32); break;
    case DType::Q6_K: dequant_q6k_kernel<<<blocks_for(n / 256 * 64, 128), 128, 0, s>>>(b, dst, n / 256 * 64); break;
    case DType::F8_B64:
    case DType::I4_G32:
    case DType::I4_G64:
    case DType::I4_G128: dequant_hf_kernel<<<blocks_for(n / 32, 128), 128, 0, s>>>(t, b, dst, n / 32); break;
    default: throw Error("CUDA upload: cannot convert weights of type " + std::string(dtype_name(t)) + " to bf16");
  }
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace greta::cuda
