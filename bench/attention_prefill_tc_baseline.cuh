// The prompt-attention kernel before the cp.async / ldmatrix / 64-key rewrite, kept for A/B in
// gpu_prefill_attention_bench (one kernel, no pipelining, V transposed through scalar stores).
#pragma once
// Causal prefill attention on tensor cores (FlashAttention-2 style), head_dim 64 or 128.
//
// Block = 64 consecutive new tokens of one sequence x one query head; 4 warps, 16 query rows
// each. The warp's Q rows stay in registers as mma A fragments for the whole loop. Per tile of
// 32 keys of the paged cache: K (row-major) and V (transposed) are copied to shared memory, then
//   S = Q K^T   with mma.m16n8k16 (B = K^T: a lane's pair of dims of one key is contiguous),
//   online softmax on the S fragments in registers (row max / sum across the 4 lanes of a quad),
//   O += P V    where P, rounded to bf16, is the A operand as it stands: the accumulator layout
//               of an m16n8 tile pair is exactly the A layout of one k16 slice.
// No score matrix in memory, K/V read once per (64 queries, head). Keys past a row's own
// position are masked, and with a sliding window those before its window (tiles before the
// block's first window start are skipped). Fragment layouts: mma.cuh.
#include <cuda_bf16.h>

#include <string>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"

namespace greta::cuda::baseline {
namespace {

constexpr int kWarpsTc = 4;
constexpr int kRowsTc = 16 * kWarpsTc;  // query tokens per block
constexpr int kKeysTc = 32;             // keys per shared-memory tile

__device__ __forceinline__ uint32_t ld_u32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// q, out [n_tokens, n_heads * HD]; grid (ceil(max new tokens / 64), n_heads, n_prefill).
template <int HD>
__global__ void __launch_bounds__(kWarpsTc * 32)
    prefill_tc_kernel(const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc, DevStep st,
                      int n_heads, int n_kv, float scale_log2, int window, bf16* __restrict__ out) {
  constexpr int kPadK = HD + 8;       // bf16 per K row: 16-byte rows, quads of a warp on distinct banks
  constexpr int kPadV = kKeysTc + 2;  // bf16 per transposed V row (one dim): odd word stride
  __shared__ __align__(16) bf16 sk[kKeysTc][kPadK];
  __shared__ __align__(16) bf16 svt[HD][kPadV];
  const int seq = st.prefill_seqs[3 * blockIdx.z];
  const int first = st.prefill_seqs[3 * blockIdx.z + 1];
  const int count = st.prefill_seqs[3 * blockIdx.z + 2];
  const int q0 = blockIdx.x * kRowsTc;
  if (q0 >= count) return;
  const int h = blockIdx.y, kvh = h / (n_heads / n_kv);
  const int32_t* table = st.block_ids + st.block_begin[seq];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // This lane's two query rows (tile-relative token indices) and their positions.
  const int ra = q0 + 16 * warp + g, rb = ra + 8;
  const bool oka = ra < count, okb = rb < count;
  const int pos_a = oka ? st.positions[first + ra] : -1, pos_b = okb ? st.positions[first + rb] : -1;
  // A sequence's new tokens have consecutive positions, so the block's last token sees the most keys.
  const int kv_end = st.positions[first + min(q0 + kRowsTc, count) - 1] + 1;
  // ... and its first token's window starts earliest.
  const int kv_begin = window > 0 ? max(0, st.positions[first + q0] - window + 1) / kKeysTc * kKeysTc : 0;
  // Rows absent from the tile (pos -1) see no key; a window's first position of each row.
  const int lo_a = window > 0 ? pos_a - window + 1 : 0, lo_b = window > 0 ? pos_b - window + 1 : 0;

  uint32_t qa[HD / 16][4];
  {
    const bf16* qra = q + (int64_t(first + (oka ? ra : 0)) * n_heads + h) * HD + 2 * t;
    const bf16* qrb = q + (int64_t(first + (okb ? rb : 0)) * n_heads + h) * HD + 2 * t;
#pragma unroll
    for (int s = 0; s < HD / 16; ++s) {
      qa[s][0] = ld_u32(qra + 16 * s);
      qa[s][1] = ld_u32(qrb + 16 * s);
      qa[s][2] = ld_u32(qra + 16 * s + 8);
      qa[s][3] = ld_u32(qrb + 16 * s + 8);
    }
  }
  float o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m_a = kNoScore, m_b = kNoScore, l_a = 0.f, l_b = 0.f;  // l: this lane's keys only
  const int64_t row_stride = int64_t(n_kv) * HD;

  for (int kb = kv_begin; kb < kv_end; kb += kKeysTc) {
    __syncthreads();  // the previous tile is fully consumed
    for (int e = threadIdx.x; e < kKeysTc * (HD / 8); e += kWarpsTc * 32) {
      const int j = e / (HD / 8), c = e % (HD / 8);
      const int p = kb + j;
      uint4 kk = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (p < kv_end) {
        const int64_t off = kv_slot(table, p, st.block_size) * row_stride + int64_t(kvh) * HD + c * 8;
        kk = *reinterpret_cast<const uint4*>(kc + off);
        vv = *reinterpret_cast<const uint4*>(vc + off);
      }
      *reinterpret_cast<uint4*>(&sk[j][c * 8]) = kk;
      const bf16* pv = reinterpret_cast<const bf16*>(&vv);
#pragma unroll
      for (int i = 0; i < 8; ++i) svt[c * 8 + i][j] = pv[i];
    }
    __syncthreads();
    // S = Q K^T for the tile: 4 n-tiles of 8 keys.
    float sc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
      const bf16* kr = &sk[8 * nt + g][2 * t];
#pragma unroll
      for (int s = 0; s < HD / 16; ++s)
        mma_bf16(sc[nt], qa[s][0], qa[s][1], qa[s][2], qa[s][3], ld_u32(kr + 16 * s), ld_u32(kr + 16 * s + 8));
    }
    // Scale, mask, running max (over the quad: the 4 lanes hold a row's 32 keys between them).
    float ta = kNoScore, tb = kNoScore;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int key = kb + 8 * nt + 2 * t + i;
        sc[nt][i] = key <= pos_a && key >= lo_a ? sc[nt][i] * scale_log2 : kNoScore;
        sc[nt][2 + i] = key <= pos_b && key >= lo_b ? sc[nt][2 + i] * scale_log2 : kNoScore;
        ta = fmaxf(ta, sc[nt][i]);
        tb = fmaxf(tb, sc[nt][2 + i]);
      }
    }
    const float na = fmaxf(m_a, quad_max(ta)), nb = fmaxf(m_b, quad_max(tb));
    const float ca = exp2f(m_a - na), cb = exp2f(m_b - nb);
    m_a = na;
    m_b = nb;
    l_a *= ca;
    l_b *= cb;
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) o[d][0] *= ca, o[d][1] *= ca, o[d][2] *= cb, o[d][3] *= cb;
    // P = 2^(S - m), rounded to bf16 as the A operand of P V (the sums use the rounded values).
    // Masked keys get exactly 0: a row whose window starts past this tile has m still at
    // kNoScore, where 2^(S - m) of a masked score would be 1.
    uint32_t pa[4][2];  // [n-tile][row a / row b]: keys 2t, 2t+1 of the n-tile
    auto p2 = [](float s, float m) { return s == kNoScore ? 0.f : exp2f(s - m); };
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const __nv_bfloat162 A = __floats2bfloat162_rn(p2(sc[nt][0], na), p2(sc[nt][1], na));
      const __nv_bfloat162 B = __floats2bfloat162_rn(p2(sc[nt][2], nb), p2(sc[nt][3], nb));
      l_a += __low2float(A) + __high2float(A);
      l_b += __low2float(B) + __high2float(B);
      pa[nt][0] = *reinterpret_cast<const uint32_t*>(&A);
      pa[nt][1] = *reinterpret_cast<const uint32_t*>(&B);
    }
    // O += P V: two k-slices of 16 keys; B = V (keys x dims) read from the transposed copy.
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
#pragma unroll
      for (int d = 0; d < HD / 8; ++d) {
        const bf16* vr = &svt[8 * d + g][16 * s2 + 2 * t];
        mma_bf16(o[d], pa[2 * s2][0], pa[2 * s2][1], pa[2 * s2 + 1][0], pa[2 * s2 + 1][1], ld_u32(vr), ld_u32(vr + 8));
      }
    }
  }
  const float ia = 1.f / quad_sum(l_a), ib = 1.f / quad_sum(l_b);
  bf16* oa = out + (int64_t(first + ra) * n_heads + h) * HD + 2 * t;
  bf16* ob = out + (int64_t(first + rb) * n_heads + h) * HD + 2 * t;
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    if (oka) *reinterpret_cast<uint32_t*>(oa + 8 * d) = pack_bf16(o[d][0] * ia, o[d][1] * ia);
    if (okb) *reinterpret_cast<uint32_t*>(ob + 8 * d) = pack_bf16(o[d][2] * ib, o[d][3] * ib);
  }
}

template <int HD>
void launch_tc(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale, int window,
               cudaStream_t s) {
  dim3 grid(unsigned((st.max_prefill_tokens + kRowsTc - 1) / kRowsTc), unsigned(n_heads), unsigned(st.n_prefill));
  prefill_tc_kernel<HD>
      <<<grid, kWarpsTc * 32, 0, s>>>(q, kv.k, kv.v, st, n_heads, kv.n_kv_heads, scale * kLog2e, window, out);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool attention_prefill_tc_baseline_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

void attention_prefill_tc_baseline(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads,
                                   float scale, int window, cudaStream_t s) {
  if (st.n_prefill == 0) return;
  switch (kv.head_dim) {
    case 64: launch_tc<64>(q, out, st, kv, n_heads, scale, window, s); break;
    case 128: launch_tc<128>(q, out, st, kv, n_heads, scale, window, s); break;
    default: throw Error("cuda attention_prefill_tc: head_dim " + std::to_string(kv.head_dim) + " (64 or 128 only)");
  }
}

}  // namespace greta::cuda::baseline
