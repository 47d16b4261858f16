// How the decode GEMV (gemv_kernel.cuh) reads one lane's weights: a weight format policy per
// storage type. The kernel walks k in chunks; in each chunk lane t of a row owns 8 * kSub
// consecutive values (its "granule"), which the policy loads (load: raw registers, issued early
// by the pipelined loop) and turns into kSub uint4s of bf16 pairs (dequant) whose halves pair up
// with x exactly as the bf16 weights' words do: word .x holds values (0, 1) of the 8-value
// sub-granule, .y (2, 3), .z (4, 5), .w (6, 7).
//   WeightBf16        bf16 rows, 8 values (one 16-byte load) a lane a chunk
//   WeightQuant<T>    block formats repacked into planes (quant_planes.h): 32 values a lane a
//                     chunk (16 for the 8-bit Q8_0 and F8_B64), i.e. one 16-byte load of quants
//                     plus the group's scales, dequantized in registers: 4/5/6-bit values are
//                     built as bf16 128 + q by OR-ing the quant bits into 0x4300 (exact,
//                     q < 128), then scaled; FP8 e4m3 pairs go through the hardware conversion
//                     to f16x2 (exact), then fp32.
// Dequantized values are rounded to bf16, as the bf16 path rounds the weights it converts at
// upload. The 8-bit formats (Q8_0, F8_B64) compute d q in fp32. For the 4/5/6-bit formats q - z
// is exact in bf16, the scale (and the min of Q4_1/Q5_1/Q4_K/Q5_K, -d z of I4_G*) is rounded to
// bf16 first, then one bf16x2 multiply (or fma with the min) per pair. Computing d q + m in fp32
// instead halves the error of the formats with a min (whose m is as large as the values) but
// costs 3 more instructions a pair, and these kernels are bound by instruction latency at low
// occupancy: 15-20% slower b1 decode for Q4_K and Q4_1 (docs/notes/quantized-weights.md). Either
// error is far below the format's own quantization error.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

// Both loads are `asm volatile` on purpose: volatile asm keeps its program order, which pins
// all of an iteration's loads ahead of its first mma (gemv_kernel.cuh).
__device__ __forceinline__ uint4 ld_stream(const void* p) {  // read-once data: skip L1
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 ld_cached(const void* p) {  // x: re-read by every warp, keep in L1
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
// Scales and high bits: small, and the neighbouring groups' share their sectors, so through L1.
__device__ __forceinline__ uint32_t ld_u32(const void* p) {
  uint32_t v;
  asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_u16(const void* p) {
  unsigned short v;
  asm volatile("ld.global.nc.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_u64(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

struct WeightBf16 {
  static constexpr bool kDot = false;  // int8 dot products (gemv_dot.cuh WeightDot)
  static constexpr int kSub = 1;
  static constexpr int kUnroll = 2;
  using Lane = const bf16*;
  using Raw = uint4;
  __device__ static Lane lane(const bf16* w, int64_t row, int64_t m, int64_t k, int64_t kb0, int t) {
    return w + row * k + kb0 + 8 * t;
  }
  __device__ static Raw load(Lane p, int64_t c) { return ld_stream(p + 32 * c); }
  __device__ static Raw zero() { return make_uint4(0, 0, 0, 0); }
  __device__ static void dequant(const Lane&, const Raw& r, int64_t, uint4 (&o)[1]) { o[0] = r; }
};

__device__ __forceinline__ __nv_bfloat162 as_bf2(uint32_t u) { return *reinterpret_cast<const __nv_bfloat162*>(&u); }
__device__ __forceinline__ uint32_t as_u32(__nv_bfloat162 v) { return *reinterpret_cast<const uint32_t*>(&v); }
__device__ __forceinline__ float half_bits(uint32_t h) { return __half2float(__ushort_as_half((unsigned short)h)); }
// x >> n for n >= 0, x << -n otherwise (n is a compile-time constant after unrolling).
__device__ __forceinline__ uint32_t shift_r(uint32_t x, int n) { return n >= 0 ? x >> n : x << -n; }

// EXACT_MIN: d q + m in fp32, rounded once (the upload's dequantization: embedding rows and the
// bf16 slices of the many-token GEMM); otherwise bf16x2 math (the decode GEMV; see the top).
// Q5_1 keeps fp32 in the GEMV too: its 5-bit quants with a bf16-rounded min moved a batch-1
// token of the Llama-2-7B shape past `greta bench`'s check margin (measured).
template <DType T, bool EXACT_MIN = T == DType::Q5_1>
struct WeightQuant {
  static constexpr bool kQ8 = T == DType::Q8_0;
  static constexpr bool kF8 = T == DType::F8_B64;
  static constexpr bool kBytes = byte_quants(T);  // a byte a value: 16 values a lane a chunk
  static constexpr bool kK = T == DType::Q4_K || T == DType::Q5_K;
  static constexpr bool kHi1 = T == DType::Q5_0 || T == DType::Q5_1 || T == DType::Q5_K;
  static constexpr bool kHi2 = T == DType::Q6_K;
  static constexpr bool kMin = T == DType::Q4_1 || T == DType::Q5_1;  // fp16 (d, m) per group
  static constexpr bool kI4 = int4_format(T);                         // (fp16 d, zero) per G values
  static constexpr bool kAffine = kMin || kK || kI4;                  // value = d q + m (scale_min)
  static constexpr int kSub = kBytes ? 2 : 4;                         // 8-value sub-granules a lane a chunk
  static constexpr bool kDot = false;                                 // dequantized to bf16 for the mma
  // Chunks in flight a lane (gemv_kernel.cuh UNROLL): more for the byte formats, whose chunk is
  // half the values; more for the 4-bit formats costs registers and with them occupancy
  // (measured slower).
  static constexpr int kUnroll = kBytes ? 4 : 1;
  struct Lane {
    const uint8_t* q;   // this lane's first granule's quants; + 64 B a chunk
    const uint8_t* hi;  // high bits of the same; + 16 B (Q5) / 32 B (Q6_K) a chunk
    const uint8_t* sc;  // the row's scale plane
    const uint8_t* d;   // Q6_K: the row's d plane
    int64_t g0;         // index in the row of this lane's first 32-value group
  };
  struct Raw {
    uint4 q;
    uint2 hi;    // Q5: .x; Q6_K: .x (sub-granules 0, 1), .y (2, 3)
    uint4 sc;    // Q8_0/Q4_0/Q5_0: .x = fp16 d; Q4_1/Q5_1: .x = (d, m); K: the 16-byte record; Q6_K: .x = 2
                 // int8 scales; F8_B64: .x = fp32 scale; I4_G*: .x = (fp16 d, zero byte, pad)
    uint32_t d;  // Q6_K: fp16 super-block d
  };
  __device__ static Lane lane(const bf16* w, int64_t row, int64_t m, int64_t k, int64_t kb0, int t) {
    const auto* base = reinterpret_cast<const uint8_t*>(w);
    const QuantPlanes P = quant_planes(T, m, k);
    const int64_t v0 = kb0 + 8 * kSub * t;  // first value of the lane's granule in chunk 0
    Lane l;
    l.q = base + P.q + row * int64_t(plane_q_row(T, k)) + (kBytes ? v0 : v0 / 2);
    l.hi = base + P.hi + row * int64_t(plane_hi_row(T, k)) + (kHi2 ? v0 / 4 : v0 / 8);
    l.sc = base + P.sc + row * int64_t(plane_sc_row(T, k));
    l.d = base + P.d + row * int64_t(plane_d_row(T, k));
    l.g0 = v0 / 32;
    return l;
  }
  static constexpr int kGroups = kBytes ? 2 : 4;  // 32-value groups in a chunk of a row (4 lanes)
  // Where group g's scale record lies in its row of the sc plane (bytes from the row's start),
  // and how many bytes `load` reads there; the same for Q6_K's d plane.
  GRETA_HD static constexpr int64_t sc_at(int64_t g) {
    return kF8    ? 4 * (g / 2)
           : kI4  ? 4 * (g / (int4_group(T) / 32))
           : kK   ? 16 * (g / 8)
           : kHi2 ? 16 * (g / 8) + 2 * (g % 8)
           : kMin ? 4 * g
                  : 2 * g;
  }
  static constexpr int kScBytes = kK ? 16 : kF8 || kI4 || kMin ? 4 : 2;
  GRETA_HD static constexpr int64_t d_at(int64_t g) { return 2 * (g / 8); }
  __device__ static Raw load(const Lane& l, int64_t c) {
    Raw r;
    r.q = ld_stream(l.q + 64 * c);
    const int64_t g = l.g0 + kGroups * c;  // this granule's group
    if constexpr (kHi1) r.hi.x = ld_u32(l.hi + 16 * c);
    if constexpr (kHi2) r.hi = ld_u64(l.hi + 32 * c);
    if constexpr (kK) r.sc = ld_cached(l.sc + sc_at(g));
    else if constexpr (kScBytes == 4) r.sc.x = ld_u32(l.sc + sc_at(g));
    else r.sc.x = ld_u16(l.sc + sc_at(g));
    if constexpr (kHi2) r.d = ld_u16(l.d + d_at(g));
    return r;
  }
  __device__ static Raw zero() {
    Raw r;
    r.q = make_uint4(0, 0, 0, 0);
    r.hi = make_uint2(0, 0);
    r.sc = make_uint4(0, 0, 0, 0);
    r.d = 0;
    return r;
  }
  // Sub-granule s, pair p of a 4-bit format as bf16x2 (128 + q_even, 128 + q_odd), high bits in.
  __device__ static uint32_t pair(const Raw& r, int s, int p) {
    const uint32_t w = s == 0 ? r.q.x : s == 1 ? r.q.y : s == 2 ? r.q.z : r.q.w;
    uint32_t v = ((w >> (4 * p)) & 0x000F000Fu) | 0x43004300u;
    if constexpr (kHi1) v |= shift_r(r.hi.x, 4 * s + p - 4) & 0x00100010u;
    if constexpr (kHi2) v |= shift_r(s < 2 ? r.hi.x : r.hi.y, 2 * (4 * (s % 2) + p) - 4) & 0x00300030u;
    return v;
  }
  // Formats with a min or zero point: this chunk's group's scale d and min m (value = d q + m; I4_G*: m = -d z).
  __device__ static void scale_min(const Lane& l, const Raw& r, int64_t c, float& d, float& m) {
    if constexpr (kMin) {
      d = half_bits(r.sc.x & 0xffffu);
      m = half_bits(r.sc.x >> 16);
    } else if constexpr (kI4) {
      d = half_bits(r.sc.x & 0xffffu);
      m = -d * float((r.sc.x >> 16) & 0xffu);
    } else {
      // Sub-block j of the super-block: its 6-bit scale and min (core/quant_blocks.h q4k_scale_min).
      const int j = int((l.g0 + 4 * c) % 8), jj = j & 3;
      const uint32_t a = (r.sc.y >> (8 * jj)) & 0xffu, b = (r.sc.z >> (8 * jj)) & 0xffu,
                     e = (r.sc.w >> (8 * jj)) & 0xffu;
      const uint32_t sc = j < 4 ? a & 63u : (e & 15u) | ((a >> 6) << 4);
      const uint32_t mn = j < 4 ? b & 63u : (e >> 4) | ((b >> 6) << 4);
      d = half_bits(r.sc.x & 0xffffu) * float(sc);
      m = -half_bits(r.sc.x >> 16) * float(mn);
    }
  }
  __device__ static void dequant(const Lane& l, const Raw& r, int64_t c, uint4 (&o)[kSub]) {
    if constexpr (kQ8) {
      const float d = half_bits(r.sc.x);
      const uint32_t words[4] = {r.q.x ^ 0x80808080u, r.q.y ^ 0x80808080u, r.q.z ^ 0x80808080u, r.q.w ^ 0x80808080u};
      uint32_t out[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {  // values 2j, 2j + 1: bytes (2j) % 4 and + 1 of word j / 2
        const uint32_t u = words[j / 2];
        const float lo = __int_as_float(int(__byte_perm(u, 0x4B00u, 0x5440u | unsigned((2 * j) % 4)))) - 8388736.f;
        const float hi = __int_as_float(int(__byte_perm(u, 0x4B00u, 0x5440u | unsigned((2 * j) % 4 + 1)))) - 8388736.f;
        out[j] = pack_bf16(lo * d, hi * d);
      }
#pragma unroll
      for (int s = 0; s < kSub; ++s) o[s] = make_uint4(out[4 * s], out[4 * s + 1], out[4 * s + 2], out[4 * s + 3]);
    } else if constexpr (kF8) {
      // e4m3 -> f16 is exact (cvt.rn.f16x2.e4m3x2 on sm_89+); the product is taken in fp32 and
      // rounded to bf16 once, as the CPU's scale * value rounded to bf16.
      const float d = __uint_as_float(r.sc.x);
      const uint32_t words[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
      uint32_t out[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {  // values 2j, 2j + 1: the low (j even) or high half of word j / 2
        const auto two = __nv_fp8x2_storage_t((words[j / 2] >> (16 * (j % 2))) & 0xffffu);
        const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(two, __NV_E4M3)));
        out[j] = pack_bf16(f.x * d, f.y * d);
      }
#pragma unroll
      for (int s = 0; s < kSub; ++s) o[s] = make_uint4(out[4 * s], out[4 * s + 1], out[4 * s + 2], out[4 * s + 3]);
    } else if constexpr (kAffine && EXACT_MIN) {
      // I4_G*: m = -d z; d (z + 128) is exact in fp32 (at most 11 + 9 significant bits), so c0
      // below adds no rounding of its own.
      float d, m;
      scale_min(l, r, c, d, m);
      const float c0 = m - 128.f * d;  // the pairs hold 128 + q
#pragma unroll
      for (int s = 0; s < kSub; ++s) {
        uint32_t w[4];
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const uint32_t v = pair(r, s, p);
          w[p] = pack_bf16(fmaf(__uint_as_float(v << 16), d, c0), fmaf(__uint_as_float(v & 0xffff0000u), d, c0));
        }
        o[s] = make_uint4(w[0], w[1], w[2], w[3]);
      }
    } else {
      __nv_bfloat162 mul[2], add = __float2bfloat162_rn(0.f);
      float off = 128.f;  // 128 + the format's zero point, taken off before scaling
      if constexpr (T == DType::Q4_0 || T == DType::Q5_0) {
        mul[0] = mul[1] = __float2bfloat162_rn(half_bits(r.sc.x));
        off = T == DType::Q4_0 ? 136.f : 144.f;
      } else if constexpr (kAffine) {
        float d, m;
        scale_min(l, r, c, d, m);
        mul[0] = mul[1] = __float2bfloat162_rn(d);
        add = __float2bfloat162_rn(m);
      } else {  // Q6_K: two 16-value sub-blocks, int8 scales
        const float d = half_bits(r.d);
        mul[0] = __float2bfloat162_rn(d * float(int8_t(r.sc.x & 0xffu)));
        mul[1] = __float2bfloat162_rn(d * float(int8_t((r.sc.x >> 8) & 0xffu)));
        off = 160.f;
      }
      const __nv_bfloat162 off2 = __float2bfloat162_rn(off);
#pragma unroll
      for (int s = 0; s < kSub; ++s) {
        uint32_t w[4];
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const __nv_bfloat162 q = __hsub2(as_bf2(pair(r, s, p)), off2);  // exact: small integers
          w[p] = as_u32(kAffine ? __hfma2(q, mul[s / 2], add) : __hmul2(q, mul[s / 2]));
        }
        o[s] = make_uint4(w[0], w[1], w[2], w[3]);
      }
    }
  }
};

}  // namespace
}  // namespace greta::cuda
