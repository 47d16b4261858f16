// RoPE fused with the paged KV write: blocks of 8 heads per token rotate the q and k heads in
// place and store k and v at the token's cache slot; the head-normed variant first applies
// Qwen3's per-head RMSNorm to each q and k head (a warp per head). Angles like the CPU reference: the angle
// pos * inv_freq in fp32, its sin/cos in double (angles reach ~1e5 rad at long contexts, where
// fast single-precision sin/cos lose all accuracy).
#include <cuda_bf16.h>

#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

constexpr int kHeadsPerBlock = 8;  // q and k heads rotated by one block
constexpr int kMaxHalf = 128;      // head_dim <= 256
constexpr int kThreads = 128;

// sin/cos of pos * inv_freq[i] for i < half into shared memory, then a barrier.
__device__ void rope_angles(int pos, const float* __restrict__ inv_freq, int half, float* s_cos, float* s_sin) {
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = float(pos) * inv_freq[i];
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    s_cos[i] = float(cd);
    s_sin[i] = float(sd);
  }
  __syncthreads();
}

// Token t's share of v into the cache: block (t, c) copies every gridDim.y-th chunk of the row.
__device__ void copy_v(const bf16* __restrict__ v, bf16* __restrict__ vc, int64_t t, int64_t slot, int64_t kv_row) {
  const bf16* vr = v + t * kv_row;
  for (int64_t e = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; e < kv_row; e += int64_t(gridDim.y) * blockDim.x)
    vc[slot * kv_row + e] = vr[e];
}

// grid (n_tokens, ceil((n_heads + n_kv) / kHeadsPerBlock)): block (t, c) rotates heads
// [8c, 8c + 8) of the token's q heads followed by its k heads, and copies its share of v.
// The head_dim/2 angles of a token are the same for every head, so each block computes their
// sin/cos once into shared memory (double precision, one per thread) instead of once per pair.
__global__ void rope_kv_kernel(bf16* __restrict__ q, bf16* __restrict__ k, const bf16* __restrict__ v, int n_heads,
                               int n_kv, int hd, const float* __restrict__ inv_freq, bool neox,
                               const int32_t* __restrict__ positions, const int32_t* __restrict__ slots,
                               bf16* __restrict__ kc, bf16* __restrict__ vc) {
  pdl_allow_dependents();
  pdl_wait();
  const int64_t t = blockIdx.x;
  const int half = hd / 2;
  const int pos = positions[t];
  const int64_t slot = slots[t];
  const int64_t kv_row = int64_t(n_kv) * hd;
  __shared__ float s_cos[kMaxHalf], s_sin[kMaxHalf];
  rope_angles(pos, inv_freq, half, s_cos, s_sin);
  bf16* qr = q + t * int64_t(n_heads) * hd;
  bf16* kr = k + t * kv_row;
  const int h0 = blockIdx.y * kHeadsPerBlock;
  const int h_end = min(h0 + kHeadsPerBlock, n_heads + n_kv);
  for (int p = h0 * half + threadIdx.x; p < h_end * half; p += blockDim.x) {
    const int h = p / half, i = p % half;
    const bool is_q = h < n_heads;
    bf16* row = is_q ? qr + int64_t(h) * hd : kr + int64_t(h - n_heads) * hd;
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float c = s_cos[i], s = s_sin[i];
    const float a = __bfloat162float(row[i0]), b = __bfloat162float(row[i1]);
    const bf16 ra = __float2bfloat16_rn(a * c - b * s), rb = __float2bfloat16_rn(a * s + b * c);
    row[i0] = ra;
    row[i1] = rb;
    if (!is_q) {  // rotated k goes to the cache too
      bf16* dst = kc + slot * kv_row + int64_t(h - n_heads) * hd;
      dst[i0] = ra;
      dst[i1] = rb;
    }
  }
  copy_v(v, vc, t, slot, kv_row);
}

// As rope_kv_kernel, each q and k head first RMS-normalized with its weights (q_norm for q heads,
// k_norm for k heads; fp32 [hd]): warp w of the block takes heads h0 + w, h0 + w + 4, ...; a lane
// holds up to kMaxHalf / 32 pairs of its head in registers across the norm and the rotation.
__global__ void __launch_bounds__(kThreads)
    rope_kv_headnorm_kernel(bf16* __restrict__ q, bf16* __restrict__ k, const bf16* __restrict__ v, int n_heads,
                            int n_kv, int hd, const float* __restrict__ q_norm, const float* __restrict__ k_norm,
                            float eps, const float* __restrict__ inv_freq, bool neox,
                            const int32_t* __restrict__ positions, const int32_t* __restrict__ slots,
                            bf16* __restrict__ kc, bf16* __restrict__ vc) {
  constexpr int kPairs = kMaxHalf / 32;
  pdl_allow_dependents();
  pdl_wait();
  const int64_t t = blockIdx.x;
  const int half = hd / 2;
  const int64_t slot = slots[t];
  const int64_t kv_row = int64_t(n_kv) * hd;
  __shared__ float s_cos[kMaxHalf], s_sin[kMaxHalf];
  rope_angles(positions[t], inv_freq, half, s_cos, s_sin);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int h_end = min(int(blockIdx.y) * kHeadsPerBlock + kHeadsPerBlock, n_heads + n_kv);
  for (int h = int(blockIdx.y) * kHeadsPerBlock + warp; h < h_end; h += kThreads / 32) {
    const bool is_q = h < n_heads;
    bf16* row = is_q ? q + (t * n_heads + h) * hd : k + t * kv_row + int64_t(h - n_heads) * hd;
    const float* w = is_q ? q_norm : k_norm;
    float a[kPairs], b[kPairs];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      const int i = lane + 32 * j;
      a[j] = b[j] = 0.f;
      if (i < half) {
        a[j] = __bfloat162float(row[neox ? i : 2 * i]);
        b[j] = __bfloat162float(row[neox ? i + half : 2 * i + 1]);
      }
      ss += a[j] * a[j] + b[j] * b[j];
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float inv = rsqrtf(ss / float(hd) + eps);
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      const int i = lane + 32 * j;
      if (i >= half) break;
      const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
      const float x0 = a[j] * inv * w[i0], x1 = b[j] * inv * w[i1];
      const float c = s_cos[i], s = s_sin[i];
      const bf16 ra = __float2bfloat16_rn(x0 * c - x1 * s), rb = __float2bfloat16_rn(x0 * s + x1 * c);
      row[i0] = ra;
      row[i1] = rb;
      if (!is_q) {
        bf16* dst = kc + slot * kv_row + int64_t(h - n_heads) * hd;
        dst[i0] = ra;
        dst[i1] = rb;
      }
    }
  }
  copy_v(v, vc, t, slot, kv_row);
}

}  // namespace

void rope_kv_write(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, const DevStep& st,
                   const KVLayerDev& kv, cudaStream_t s) {
  if (st.n_tokens <= 0) return;
  if (kv.head_dim / 2 > kMaxHalf) throw Error("cuda rope_kv_write: head_dim " + std::to_string(kv.head_dim) + " > 256");
  const int chunks = (n_heads + kv.n_kv_heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  launch_pdl(rope_kv_kernel, dim3(unsigned(st.n_tokens), unsigned(chunks)), dim3(kThreads), 0, s, q, k, v, n_heads,
             kv.n_kv_heads, kv.head_dim, inv_freq, neox, st.positions, st.slot, kv.k, kv.v);
}

void rope_kv_write_headnorm(bf16* q, bf16* k, const bf16* v, int n_heads, const float* q_norm, const float* k_norm,
                            float eps, const float* inv_freq, bool neox, const DevStep& st, const KVLayerDev& kv,
                            cudaStream_t s) {
  if (st.n_tokens <= 0) return;
  if (kv.head_dim / 2 > kMaxHalf) throw Error("cuda rope_kv_write: head_dim " + std::to_string(kv.head_dim) + " > 256");
  const int chunks = (n_heads + kv.n_kv_heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  launch_pdl(rope_kv_headnorm_kernel, dim3(unsigned(st.n_tokens), unsigned(chunks)), dim3(kThreads), 0, s, q, k, v,
             n_heads, kv.n_kv_heads, kv.head_dim, q_norm, k_norm, eps, inv_freq, neox, st.positions, st.slot, kv.k,
             kv.v);
}

}  // namespace greta::cuda
