// Shared by the GPU kernel benchmarks: deterministic random bf16 data, and the attention
// reference (naive, fp32, one block per (query row, head), full score row in global memory).
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"

// p[i] uniform in [-scale / 2, scale / 2), from a hash of i and seed.
__global__ void fill_random(__nv_bfloat16* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    h *= 3266489917u;
    h ^= h >> 16;
    p[i] = __float2bfloat16((float(h & 0xffffff) / 16777216.f - 0.5f) * scale);
  }
}

// Block (row r, head h): token rows[r] of sequence row_seq[r] attends positions 0 .. its own
// over the paged cache (bf16 K, V [blocks, bs, n_kv, hd]). rows [n_rows] token indices, row_seq [n_rows] their
// sequence, positions [n_tokens]; scores [n_rows, heads, max_ctx]; out [n_rows, heads, hd].
__global__ void naive_attention_rows(const __nv_bfloat16* q, const __nv_bfloat16* kc, const __nv_bfloat16* vc,
                                     const int32_t* rows, const int32_t* row_seq, const int32_t* positions,
                                     const int32_t* block_begin, const int32_t* block_ids, int max_ctx, int n_heads,
                                     int n_kv, int hd, int bs, float scale, float* scores, float* out) {
  const int r = blockIdx.x, h = blockIdx.y, kvh = h / (n_heads / n_kv);
  const int tok = rows[r], ctx = positions[tok] + 1;
  const int32_t* table = block_ids + block_begin[row_seq[r]];
  float* sc = scores + (int64_t(r) * n_heads + h) * max_ctx;
  const __nv_bfloat16* qr = q + (int64_t(tok) * n_heads + h) * hd;
  for (int p = threadIdx.x; p < ctx; p += blockDim.x) {
    const int64_t slot = int64_t(table[p / bs]) * bs + p % bs;
    const __nv_bfloat16* kr = kc + (slot * n_kv + kvh) * hd;
    float s = 0.f;
    for (int d = 0; d < hd; ++d) s += __bfloat162float(qr[d]) * __bfloat162float(kr[d]);
    sc[p] = s * scale;
  }
  __syncthreads();
  __shared__ float red[2];
  if (threadIdx.x == 0) {
    float mx = -INFINITY, sum = 0.f;
    for (int p = 0; p < ctx; ++p) mx = fmaxf(mx, sc[p]);
    for (int p = 0; p < ctx; ++p) sum += expf(sc[p] - mx);
    red[0] = mx;
    red[1] = sum;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.f;
    for (int p = 0; p < ctx; ++p) {
      const int64_t slot = int64_t(table[p / bs]) * bs + p % bs;
      o += expf(sc[p] - red[0]) * __bfloat162float(vc[(slot * n_kv + kvh) * hd + d]);
    }
    out[(int64_t(r) * n_heads + h) * hd + d] = o / red[1];
  }
}

// One paged cache layer of random values (seeds 11 for K, 12 for V, uniform in [-1, 1)):
// k, v [n_blocks, bs, n_kv, hd] bf16. The caller frees kv.k and kv.v.
inline greta::cuda::KVLayerDev random_kv_layer(int n_blocks, int bs, int n_kv, int hd) {
  greta::cuda::KVLayerDev kv;
  const size_t pool = size_t(n_blocks) * bs * n_kv * hd;
  GRETA_CUDA_CHECK(cudaMalloc(&kv.k, pool * 2));
  GRETA_CUDA_CHECK(cudaMalloc(&kv.v, pool * 2));
  kv.n_blocks = n_blocks;
  kv.block_size = bs;
  kv.n_kv_heads = n_kv;
  kv.head_dim = hd;
  fill_random<<<2048, 256>>>(kv.k, int64_t(pool), 11, 2.f);
  fill_random<<<2048, 256>>>(kv.v, int64_t(pool), 12, 2.f);
  GRETA_CUDA_LAUNCH_CHECK();
  return kv;
}
