// The persistent decode step's arithmetic on a piece of weights (persistent_step.cu): a piece's
// 16-byte columns, bf16 or packed (Q8_0, Q4_0 planes), dotted with the phase's staged input, and
// a token's output rounded as a GEMV's. The same code serves pieces in the ring's shared memory
// and claimed rows read from global memory. Included by persistent_step.cu alone: its functions
// keep internal linkage (the unnamed namespace).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/persistent_step.h"

namespace greta::cuda::persistent {
namespace {

// Bytes of a piece: a bulk copy into a ring slot, and the unit of a row's dot products.
constexpr int kPieceBytes = 4096;

// Bytes of a row of k weights (quants for the packed formats), and the shift from quant bytes to
// scale bytes (fp16 a 32 values: Q8_0 16 quant bytes a scale byte, Q4_0 8).
__device__ __forceinline__ int weight_row_bytes(PersistentWeights f, int k) {
  return f == PersistentWeights::kBf16 ? 2 * k : f == PersistentWeights::kQ8_0 ? k : k / 2;
}
__host__ __device__ constexpr int scale_shift(PersistentWeights f) {
  return f == PersistentWeights::kQ8_0 ? 4 : f == PersistentWeights::kQ4_0 ? 3 : 0;
}

// Dot of 8 bf16 weights with 8 bf16 inputs, from zero: the per-piece sums are independent chains,
// added to the row's sum afterwards, so the FMAs of consecutive 16-byte columns overlap.
__device__ __forceinline__ float dot8(const uint4 w, const uint4 x) {
  float fw[8], fx[8];
  unpack8(w, fw);
  unpack8(x, fx);
  float d = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) d = fmaf(fw[j], fx[j], d);
  return d;
}

// The 16-byte column at b of a packed piece against token t's int8 input xt (stage_input_int8),
// the piece starting at quant byte `off` of its row, sc its scales (slot + kPieceBytes + the
// alignment offset). Q8_0: half a group; Q4_0: a whole group (value = d q - 8 d).
template <PersistentWeights F>
__device__ __forceinline__ float packed_dot(const uint4 w, const unsigned char* sc, int b, int off,
                                            const unsigned char* xt, int max_k) {
  if constexpr (F == PersistentWeights::kQ8_0) {
    const uint4 x = *reinterpret_cast<const uint4*>(xt + off + b);
    const float dx = reinterpret_cast<const float2*>(xt + max_k)[(off + b) / 32].x;
    int s = 0;
    s = __dp4a(int(w.x), int(x.x), s);
    s = __dp4a(int(w.y), int(x.y), s);
    s = __dp4a(int(w.z), int(x.z), s);
    s = __dp4a(int(w.w), int(x.w), s);
    return half_bits(*reinterpret_cast<const unsigned short*>(sc + 2 * (b / 32))) * (dx * float(s));
  } else {
    const int v = 2 * (off + b);  // the group's first value
    const uint4 x0 = *reinterpret_cast<const uint4*>(xt + v), x1 = *reinterpret_cast<const uint4*>(xt + v + 16);
    const float2 gx = reinterpret_cast<const float2*>(xt + max_k)[v / 32];
    const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w}, qw[4] = {w.x, w.y, w.z, w.w};
    int s = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s = __dp4a(int(qw[j] & 0x0F0F0F0Fu), int(xw[2 * j]), s);
      s = __dp4a(int((qw[j] >> 4) & 0x0F0F0F0Fu), int(xw[2 * j + 1]), s);
    }
    const float d = half_bits(*reinterpret_cast<const unsigned short*>(sc + 2 * (b / 16)));
    return d * (gx.x * float(s)) + (-8.f * d) * gx.y;
  }
}

// A piece's 16-byte columns (lane's every 512 bytes) dotted with the staged input of up to N
// tokens into acc. WHOLE: the piece is kPieceBytes long.
template <int N, PersistentWeights F, bool WHOLE>
__device__ __forceinline__ void piece_dot(const unsigned char* buf, const unsigned char* sc, int bytes, int off,
                                          const unsigned char* in, size_t x_stride, int max_k, int n, float (&acc)[N]) {
  const int lane = int(threadIdx.x % 32);
#pragma unroll
  for (int i = 0; i < kPieceBytes / 512; ++i) {
    const int b = 512 * i + 16 * lane;
    if (WHOLE || b < bytes) {
      const uint4 w = *reinterpret_cast<const uint4*>(buf + b);
#pragma unroll
      for (int t = 0; t < N; ++t)
        if (N == 1 || t < n) {
          if constexpr (F == PersistentWeights::kBf16)
            acc[t] += dot8(w, *reinterpret_cast<const uint4*>(in + t * x_stride + off + b));
          else acc[t] += packed_dot<F>(w, sc, b, off, in + t * x_stride, max_k);
        }
    }
  }
}

// Lane t's value of acc[t] times sc (token t's output scale, stage_scale), rounded to bf16 as a
// GEMV's output is (a constant index keeps acc in registers).
template <int N>
__device__ __forceinline__ float lane_value(const float (&acc)[N], int lane, float sc) {
  float v = 0.f;
#pragma unroll
  for (int t = 0; t < N; ++t)
    if (t == lane) v = acc[t];
  return __bfloat162float(__float2bfloat16_rn(v * sc));
}

}  // namespace
}  // namespace greta::cuda::persistent
