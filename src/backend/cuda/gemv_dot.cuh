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
// without shuffling. After the bytes: per group a float2 (d, sum of the group's x values).
//
// value = d_w q + m_w for every format here (Q4_0: m = -8 d; Q8_0: m = 0), so a granule's dot
// product is d_w d_x sum(q xq) + m_w sum(x): the min multiplies the exact sum of x, not the
// quantized one.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/gemv_weights.cuh"

namespace greta::cuda {
namespace {

// The GGUF formats whose one-token GEMVs take int8 activations, as llama.cpp's MMVQ and the CPU
// backend run them. The Hugging Face formats (AWQ/GPTQ int4, FP8) keep bf16 activations, as their
// CPU reference (float x) and their usual engines (W4A16, W8A16) do. Q5_*/Q6_K would need their
// high bits merged into the bytes first (not done yet).
constexpr bool dot_format(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q4_K;
}
// The longest row the shared-memory copy of x takes (int8 values plus 8 bytes a group) within the
// 48 KiB a block may have without opting in.
constexpr int64_t kDotMaxK = 32768;
__host__ __device__ constexpr int64_t dot_x_bytes(int64_t k) { return (k + 15) / 16 * 16; }
__host__ __device__ constexpr size_t dot_smem_bytes(int64_t k) { return size_t(dot_x_bytes(k) + k / 32 * 8); }

template <DType T>
struct WeightDot : WeightQuant<T> {
  using Base = WeightQuant<T>;
  using typename Base::Lane;
  using typename Base::Raw;
  static_assert(dot_format(T), "int8 dot products: Q8_0, Q4_0, Q4_1, Q4_K");
  static constexpr bool kDot = true;
  static constexpr bool kNibbles = !Base::kBytes;
  // Chunks a lane has in flight: the granules are all the registers the loop holds, so the
  // 4-bit formats can afford more than the dequantizing policy.
  static constexpr int kUnroll = Base::kBytes ? 4 : 2;

  // Quantizes x[0, k) (token 0, bf16) into xs (layout above): 4 threads a group, 8 values
  // each; every thread of the block calls it, k % 32 == 0.
  __device__ static void quantize_x(const bf16* __restrict__ x, int64_t k, uint8_t* xs) {
    const int64_t groups = k / 32;
    float2* sums = reinterpret_cast<float2*>(xs + dot_x_bytes(k));
    const int64_t span = (groups * 4 + 31) / 32 * 32;  // whole warps, so the shuffles see every lane
    for (int64_t e = threadIdx.x; e < span; e += blockDim.x) {
      const bool ok = e < groups * 4;
      const uint4 raw = ok ? *reinterpret_cast<const uint4*>(x + 8 * e) : make_uint4(0, 0, 0, 0);
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
      float f[8], amax = 0.f, sum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        f[2 * j] = __uint_as_float(w[j] << 16);
        f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(f[j])), sum += f[j];
#pragma unroll
      for (int o = 1; o < 4; o *= 2) {  // the group's 4 threads are adjacent lanes
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      }
      const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
      uint32_t q[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) q[j] = uint32_t(__float2int_rn(f[j] * id)) & 0xffu;
      uint2 packed;
      if constexpr (kNibbles) {
        packed.x = q[0] | q[4] << 8 | q[1] << 16 | q[5] << 24;
        packed.y = q[2] | q[6] << 8 | q[3] << 16 | q[7] << 24;
      } else {
        packed.x = q[0] | q[1] << 8 | q[2] << 16 | q[3] << 24;
        packed.y = q[4] | q[5] << 8 | q[6] << 16 | q[7] << 24;
      }
      if (ok) {
        *reinterpret_cast<uint2*>(xs + 8 * e) = packed;
        if (e % 4 == 0) sums[e / 4] = make_float2(d, sum);
      }
    }
  }

  // Sum over this lane's granule of chunk c (raw r) of w x, x from xs at the granule's first
  // value v (the caller's kChunk c + 8 kSub t).
  __device__ static float dot(const Lane& l, const Raw& r, int64_t c, const uint8_t* xs, int64_t k, int64_t v) {
    const float2 gx = reinterpret_cast<const float2*>(xs + dot_x_bytes(k))[v / 32];
    int s = 0;
    float d, m;
    if constexpr (kNibbles) {
      const uint4 x0 = *reinterpret_cast<const uint4*>(xs + v), x1 = *reinterpret_cast<const uint4*>(xs + v + 16);
      constexpr uint32_t kLow = 0x0F0F0F0Fu;
      s = __dp4a(int(r.q.x & kLow), int(x0.x), s);
      s = __dp4a(int((r.q.x >> 4) & kLow), int(x0.y), s);
      s = __dp4a(int(r.q.y & kLow), int(x0.z), s);
      s = __dp4a(int((r.q.y >> 4) & kLow), int(x0.w), s);
      s = __dp4a(int(r.q.z & kLow), int(x1.x), s);
      s = __dp4a(int((r.q.z >> 4) & kLow), int(x1.y), s);
      s = __dp4a(int(r.q.w & kLow), int(x1.z), s);
      s = __dp4a(int((r.q.w >> 4) & kLow), int(x1.w), s);
      if constexpr (T == DType::Q4_0) {
        d = half_bits(r.sc.x);
        m = -8.f * d;
      } else {
        Base::scale_min(l, r, c, d, m);
      }
    } else {  // Q8_0: 16 signed bytes, half a group
      const uint4 x0 = *reinterpret_cast<const uint4*>(xs + v);
      s = __dp4a(int(r.q.x), int(x0.x), s);
      s = __dp4a(int(r.q.y), int(x0.y), s);
      s = __dp4a(int(r.q.z), int(x0.z), s);
      s = __dp4a(int(r.q.w), int(x0.w), s);
      d = half_bits(r.sc.x);
      m = 0.f;
    }
    // Q8_0: the two lanes of a group each add half of sum(x) with m = 0, so nothing is counted twice.
    return d * (gx.x * float(s)) + m * gx.y;
  }
};

}  // namespace
}  // namespace greta::cuda
