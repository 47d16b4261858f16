// x quantized to int8 per 32 values (the Q8_1 form of llama.cpp's MMVQ / MMQ and the CPU
// backend's quantized matmuls), one 16-byte piece of 8 bf16 values a thread, the 4 pieces of a
// group on adjacent lanes: d = amax / 127 of the group, q = round(x / d), the group's exact sum
// and the sum of its first 16 values (Q6_K scales each half on its own). Shared by the one-token
// GEMV (gemv_dot.cuh, x in shared memory) and the batched int8 GEMM (gemm_int8.cu, x in global
// memory). Every lane of the warp calls it (shuffles).
#pragma once
#include <cstdint>

namespace greta::cuda {

struct Int8Piece {
  uint2 q;      // the 8 int8 values as two words (byte order below)
  float d;      // the group's scale
  float sum;    // the group's sum of x
  float first;  // the group's sum of its values 0..15
};

// `half` 0 for the group's pieces 0 and 1 (values 0..15). NIBBLES: the bytes of each word in the
// order a 4-bit weight word's nibbles unpack (w & 0x0F0F0F0F and (w >> 4) & 0x0F0F0F0F give
// values (0, 4, 1, 5) and (2, 6, 3, 7) of its 8: quant_planes.h), else in order.
template <bool NIBBLES>
__device__ __forceinline__ Int8Piece quantize_int8_piece(uint4 raw, int half) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  float f[8], amax = 0.f, sum = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    f[2 * j] = __uint_as_float(w[j] << 16);
    f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(f[j])), sum += f[j];
  float first = half == 0 ? sum : 0.f;
#pragma unroll
  for (int o = 1; o < 4; o *= 2) {  // the group's 4 threads are adjacent lanes
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
    first += __shfl_xor_sync(0xffffffffu, first, o);
  }
  const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
  uint32_t q[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) q[j] = uint32_t(__float2int_rn(f[j] * id)) & 0xffu;
  Int8Piece p;
  if constexpr (NIBBLES) {
    p.q.x = q[0] | q[4] << 8 | q[1] << 16 | q[5] << 24;
    p.q.y = q[2] | q[6] << 8 | q[3] << 16 | q[7] << 24;
  } else {
    p.q.x = q[0] | q[1] << 8 | q[2] << 16 | q[3] << 24;
    p.q.y = q[4] | q[5] << 8 | q[6] << 16 | q[7] << 24;
  }
  p.d = d;
  p.sum = sum;
  p.first = first;
  return p;
}

}  // namespace greta::cuda
