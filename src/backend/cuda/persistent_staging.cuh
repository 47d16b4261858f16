// The persistent decode step's staging of a GEMV phase's input (persistent_step.cu): the input
// read once from L2 into the block's shared memory, as bf16 (bf16 weights) or quantized to int8
// per 32 values (packed weights), a normed input multiplied by its norm weights, with the factor
// each token's outputs take (1/rms, or 1) into scale. Included by persistent_step.cu alone: its
// functions keep internal linkage (the unnamed namespace), as they had there.
#pragma once
#include <cuda_bf16.h>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/int8_piece.cuh"
#include "backend/cuda/persistent_block.cuh"
#include "backend/cuda/persistent_step.h"

namespace greta::cuda::persistent {
namespace {

// Block-wide sums of v[t] for t < n into red (every thread sees them after the call).
__device__ void block_sums(float (&v)[kMaxTok], int n, float* red) {
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
#pragma unroll
  for (int t = 0; t < kMaxTok; ++t)
    if (t < n) {
      const float s = warp_sum(v[t]);
      if (lane == 0) red[warp * kMaxTok + t] = s;
    }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < kMaxTok; ++t) {
    v[t] = 0.f;
    if (t < n)
      for (int w = 0; w < kWarps; ++w) v[t] += red[w * kMaxTok + t];
  }
}

// Staging loads a thread has in flight at once. Under the weight stream each round trip to L2
// takes over a microsecond, so a thread issues all of these before it uses any.
constexpr int kStageLoads = 2;

// 8 input values times their norm weights (fp32 w[8], 32-byte aligned), rounded to bf16; ss gets
// the values' squares (the RMSNorm's sum is of the raw input).
__device__ __forceinline__ uint4 norm_weighted(uint4 v, const float* w, float& ss) {
  const float4 w0 = __ldg(reinterpret_cast<const float4*>(w)), w1 = __ldg(reinterpret_cast<const float4*>(w) + 1);
  const float nw[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
  float f[8];
  unpack8(v, f);
  bf16* h = reinterpret_cast<bf16*>(&v);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    ss += f[j] * f[j];
    h[j] = __float2bfloat16_rn(f[j] * nw[j]);
  }
  return v;
}

// The factor each token's phase outputs take from the staging into scale[kMaxTok]: 1/rms of the
// raw input for a normed phase (the input was staged as x * norm), 1 for a plain one. Its block
// sums' barrier orders nothing else; the staging's final barrier publishes scale.
__device__ void stage_scale(const PersistentPhase& p, int n, float (&ss)[kMaxTok], float* red, float* scale) {
  if (p.input == PersistentInput::kNormed) block_sums(ss, n, red);
  if (int(threadIdx.x) < kMaxTok) {
    float v = 1.f;
#pragma unroll
    for (int t = 0; t < kMaxTok; ++t)
      if (t == int(threadIdx.x) && t < n && p.input == PersistentInput::kNormed) v = rsqrtf(ss[t] / float(p.k) + p.eps);
    scale[threadIdx.x] = v;
  }
}

// The phase's input, [n][k] bf16 into in (rows max_k apart); normed: x * norm, its 1/rms into
// scale (stage_scale). One pass over the input in L2. Ends with a block barrier.
__device__ void stage_input(const PersistentPhase& p, int n, int max_k, bf16* in, float* red, float* scale) {
  const int pieces = p.k / 8;
  const bool normed = p.input == PersistentInput::kNormed;
  float ss[kMaxTok] = {};
#pragma unroll
  for (int t = 0; t < kMaxTok; ++t) {
    if (t >= n) break;
    const uint4* src = reinterpret_cast<const uint4*>(p.in + int64_t(t) * p.in_stride);
    uint4* dst = reinterpret_cast<uint4*>(in + int64_t(t) * max_k);
    for (int e0 = int(threadIdx.x); e0 < pieces; e0 += kStageLoads * kThreads) {
      uint4 v[kStageLoads];
#pragma unroll
      for (int j = 0; j < kStageLoads; ++j)
        if (e0 + j * kThreads < pieces) v[j] = __ldcg(src + e0 + j * kThreads);
#pragma unroll
      for (int j = 0; j < kStageLoads; ++j) {
        const int e = e0 + j * kThreads;
        if (e < pieces) dst[e] = normed ? norm_weighted(v[j], p.norm + 8 * e, ss[t]) : v[j];
      }
    }
  }
  stage_scale(p, n, ss, red, scale);
  __syncthreads();
}

// The phase's input for packed weights: token t's [k] values (normed: x * norm as in
// stage_input, its 1/rms into scale) quantized to int8 per 32 (int8_piece.cuh; NIBBLES: the
// 4-bit formats' byte order) at in + 2 max_k t, each group's (scale, sum) at
// in + 2 max_k t + max_k. A group's int8 values do not depend on a common factor of its values,
// so the norm's 1/rms is left to the outputs and the input is read once. k % 32 == 0. Ends with
// a block barrier.
template <bool NIBBLES>
__device__ void stage_input_int8(const PersistentPhase& p, int n, int max_k, unsigned char* in, float* red,
                                 float* scale) {
  const int pieces = p.k / 8;
  const bool normed = p.input == PersistentInput::kNormed;
  float ss[kMaxTok] = {};
  // Whole warps walk the pieces: a group's 4 pieces are adjacent lanes sharing its maximum.
  const int span = (pieces + 31) / 32 * 32;
#pragma unroll
  for (int t = 0; t < kMaxTok; ++t) {
    if (t >= n) break;
    const uint4* src = reinterpret_cast<const uint4*>(p.in + int64_t(t) * p.in_stride);
    unsigned char* xt = in + size_t(t) * 2 * max_k;
    float2* stats = reinterpret_cast<float2*>(xt + max_k);
    for (int e0 = int(threadIdx.x); e0 < span; e0 += kStageLoads * kThreads) {
      uint4 v[kStageLoads];
#pragma unroll
      for (int j = 0; j < kStageLoads; ++j) {
        const int e = e0 + j * kThreads;
        v[j] = e < pieces ? __ldcg(src + e) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int j = 0; j < kStageLoads; ++j) {
        const int e = e0 + j * kThreads;
        if (e >= span) break;  // the same for the whole warp
        if (e < pieces && normed) v[j] = norm_weighted(v[j], p.norm + 8 * e, ss[t]);
        const Int8Piece pc = quantize_int8_piece<NIBBLES>(v[j], e % 4 / 2);
        if (e < pieces) {
          *reinterpret_cast<uint2*>(xt + 8 * e) = pc.q;
          if (e % 4 == 0) stats[e / 4] = make_float2(pc.d, pc.sum);
        }
      }
    }
  }
  stage_scale(p, n, ss, red, scale);
  __syncthreads();
}

}  // namespace
}  // namespace greta::cuda::persistent
