// The single-token decode GEMV over packed integer weights with int8 activations: x is
// quantized to int8 per 32 values in shared memory (a scale d and the sum of x per group, the
// Q8_1 form llama.cpp's MMVQ and the CPU backend's quantized matmuls use) and each lane takes
// integer dot products of its weight granule with dp4a, applying the weight group's scale and
// min once per 32 values.
//
// Why: the bf16 path (WeightQuant) turns every 4-bit value into a bf16 and feeds the tensor
// cores, ~2 instructions a value for nibble unpacking, offset and scale, plus the mmas; at batch
// 1 seven of the mma's eight token columns are padding. Measured under Nsight Compute, those
// kernels are latency-bound at low occupancy with the issue slots 30-52% busy
// (docs/notes/quantized-weights.md). Here a 16-byte granule of 32 nibbles costs 12 unpacking
// instructions and 8 dp4a, ~0.7 a value, and the scale math happens once a group.
//
// Layout of the quantized x (shared memory): byte v of group g is value v of the group, except
// for the 4-bit formats, whose lanes unpack a word w of quants as w & 0x0F0F0F0F and
// (w >> 4) & 0x0F0F0F0F, giving the values (0, 4, 1, 5) and (2, 6, 3, 7) of its 8 (quant_planes.h,
// "Order inside a group"); x's bytes are stored in that order, so the dp4a pairs line up
// without shuffling; the 5- and 6-bit formats OR their high bits into bits 4-5 of the same bytes.
// After the bytes, per group a float4: d, the sum of the group's 32 x values, the sum of its
// first 16 (Q6_K scales each half on its own), unused.
//
// value = d_w q + m_w for every format here (Q4_0: m = -8 d; Q8_0: m = 0), so a granule's dot
// product is d_w d_x sum(q xq) + m_w sum(x): the min multiplies the exact sum of x, not the
// quantized one.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/int8_piece.cuh"

namespace greta::cuda {
namespace {

// The longest row whose shared-memory copy of x (a byte a value plus 16 bytes a group) fits the
// 48 KiB a block may have without opting in, next to the kernel's own reduction arrays.
constexpr int64_t kDotMaxK = kGemvDotMaxK;
__host__ __device__ constexpr int64_t dot_x_bytes(int64_t k) { return (k + 15) / 16 * 16; }
__host__ __device__ constexpr size_t dot_smem_bytes(int64_t k) { return size_t(dot_x_bytes(k) + k / 32 * 16); }

template <DType T>
struct WeightDot : WeightQuant<T> {
  using Base = WeightQuant<T>;
  using typename Base::Lane;
  using typename Base::Raw;
  static_assert(int8_dot_format(T), "int8 dot products: the GGUF formats");
  static constexpr bool kDot = true;
  static constexpr bool kNibbles = !Base::kBytes;
  // Chunks a lane has in flight: the granules are all the registers the loop holds, so the
  // 32-value formats can afford more than the dequantizing policy. The K-quants' granules carry
  // the 16-byte scale record too: with 2 chunks their fused kernels took 120-163 registers (1-2
  // blocks an SM) and Q6_K decoded slower than on the bf16 path; 1 chunk measured the same
  // GEMV chain for Q4_K.
  static constexpr int kUnroll = Base::kBytes ? 4 : Base::kK || Base::kHi2 ? 1 : 2;

  // Quantizes x[v0, v1) of x[0, k) (token 0, bf16; a split-K block's part) into xs (layout
  // above, indexed by the value's place in the whole row): 4 threads a group, 8 values each;
  // every thread of the block calls it, k, v0 and v1 % 32 == 0.
  __device__ static void quantize_x(const bf16* __restrict__ x, int64_t k, int64_t v0, int64_t v1, uint8_t* xs) {
    const int64_t pieces = (v1 - v0) / 32 * 4;
    float4* sums = reinterpret_cast<float4*>(xs + dot_x_bytes(k));
    const int64_t span = (pieces + 31) / 32 * 32;  // whole warps, so the shuffles see every lane
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
      const bool ok = i < pieces;
      const int64_t e = v0 / 8 + i;
      const uint4 raw = ok ? *reinterpret_cast<const uint4*>(x + 8 * e) : make_uint4(0, 0, 0, 0);
      const Int8Piece pc = quantize_int8_piece<kNibbles>(raw, int(e % 4) / 2);
      if (ok) {
        *reinterpret_cast<uint2*>(xs + 8 * e) = pc.q;
        if (e % 4 == 0) sums[e / 4] = make_float4(pc.d, pc.sum, pc.first, 0.f);
      }
    }
  }

  // Word s of a 4-bit granule as the bytes of values (0, 4, 1, 5) and (2, 6, 3, 7) of its 8
  // (quant_planes.h), high bits in: Q5_* bit 4s + p / 16 + 4s + p of the group's word, Q6_K 2-bit
  // field 2(4(s % 2) + p) / 16 + ... of word s / 2, moved to bit 4 of the value's byte.
  __device__ static void unpack(const Raw& r, int s, uint32_t w, uint32_t& lo, uint32_t& hi) {
    constexpr uint32_t kLow = 0x0F0F0F0Fu;
    lo = w & kLow;
    hi = (w >> 4) & kLow;
    if constexpr (Base::kHi1) {
      const uint32_t h = r.hi.x >> (4 * s);
      lo |= ((h << 4) & 0x00100010u) | ((h << 10) & 0x10001000u);
      hi |= ((h << 3) & 0x00100010u) | ((h << 9) & 0x10001000u);
    }
    if constexpr (Base::kHi2) {
      const uint32_t h = (s < 2 ? r.hi.x : r.hi.y) >> (8 * (s % 2));
      lo |= ((h << 4) & 0x00300030u) | ((h << 8) & 0x30003000u);
      hi |= ((h << 2) & 0x00300030u) | ((h << 6) & 0x30003000u);
    }
  }

  // Sum over this lane's granule of chunk c (raw r) of w x, x from xs at the granule's first
  // value v (the caller's kChunk c + 8 kSub t).
  __device__ static float dot(const Lane& l, const Raw& r, int64_t c, const uint8_t* xs, int64_t k, int64_t v) {
    const float4 gx = reinterpret_cast<const float4*>(xs + dot_x_bytes(k))[v / 32];
    if constexpr (kNibbles) {
      const uint4 x0 = *reinterpret_cast<const uint4*>(xs + v), x1 = *reinterpret_cast<const uint4*>(xs + v + 16);
      const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
      const uint32_t qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
      int half[2] = {0, 0};  // values 0..15 and 16..31
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        uint32_t lo, hi;
        unpack(r, s, qw[s], lo, hi);
        half[s / 2] = __dp4a(int(lo), int(xw[2 * s]), half[s / 2]);
        half[s / 2] = __dp4a(int(hi), int(xw[2 * s + 1]), half[s / 2]);
      }
      if constexpr (Base::kHi2) {  // Q6_K: d sc (q - 32), a scale a 16-value half
        const float d = half_bits(r.d);
        const float d0 = d * float(int8_t(r.sc.x & 0xffu)), d1 = d * float(int8_t((r.sc.x >> 8) & 0xffu));
        return gx.x * (d0 * float(half[0]) + d1 * float(half[1])) - 32.f * (d0 * gx.z + d1 * (gx.y - gx.z));
      } else {
        float d, m;
        if constexpr (T == DType::Q4_0 || T == DType::Q5_0) {
          d = half_bits(r.sc.x);
          m = (T == DType::Q4_0 ? -8.f : -16.f) * d;
        } else {
          Base::scale_min(l, r, c, d, m);
        }
        return d * (gx.x * float(half[0] + half[1])) + m * gx.y;
      }
    } else {  // Q8_0: 16 signed bytes, half a group, m = 0
      const uint4 x0 = *reinterpret_cast<const uint4*>(xs + v);
      int s = 0;
      s = __dp4a(int(r.q.x), int(x0.x), s);
      s = __dp4a(int(r.q.y), int(x0.y), s);
      s = __dp4a(int(r.q.z), int(x0.z), s);
      s = __dp4a(int(r.q.w), int(x0.w), s);
      return half_bits(r.sc.x) * (gx.x * float(s));
    }
  }
};

}  // namespace
}  // namespace greta::cuda
