// Causal prefill attention over the paged cache: tiled, online softmax, no [n x n] score
// matrix anywhere. CUDA-core math (no tensor cores yet): correct and memory-light, not
// FlashAttention-fast.
//
// Block = (tile of consecutive query tokens of one sequence, kv head [, chunk of its query
// heads]). The tile's 16 query rows are (token, head-in-group) pairs so K/V chunks loaded
// once serve every query head of the group. Per 32-key chunk: K and V go to shared memory
// (rows padded by 16 bytes so the lane-per-key reads hit distinct banks), each warp owns 4
// query rows: lane j scores key j, the warp takes max/sum with shuffles, and each lane
// accumulates HD/32 output dims. Keys after a row's own position are masked.
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // 16 query rows per block
constexpr int kKeys = 32;                     // keys per shared-memory chunk

int group_chunk(int G) { return std::min(G, kRows); }  // query heads per block

template <int HD>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc, DevStep st,
                   int n_heads, int n_kv, float scale_log2, float cap_log2, int window, bf16* __restrict__ out) {
  constexpr int kPad = HD + 8;   // bf16 per shared K/V row
  constexpr int kDpl = HD / 32;  // output dims per lane
  const int G = n_heads / n_kv;
  const int gc = min(G, kRows);
  const int n_gchunks = (G + gc - 1) / gc;
  const int tile_tokens = kRows / gc;
  const int seq = st.prefill_seqs[3 * blockIdx.z];
  const int first = st.prefill_seqs[3 * blockIdx.z + 1];
  const int count = st.prefill_seqs[3 * blockIdx.z + 2];
  const int tt0 = blockIdx.x * tile_tokens;
  if (tt0 >= count) return;
  const int kvh = blockIdx.y / n_gchunks;
  const int g0 = (blockIdx.y % n_gchunks) * gc;
  const int ng = min(gc, G - g0);
  const int32_t* table = st.block_ids + st.block_begin[seq];

  __shared__ __align__(16) bf16 sk[kKeys][kPad];
  __shared__ __align__(16) bf16 sv[kKeys][kPad];
  __shared__ __align__(16) bf16 sq[kRows][HD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // Row r of the tile: token tt0 + r / gc, head g0 + r % gc; rows past the tile or the
  // sequence's new tokens are absent. Warp w owns rows w*kRowsPerWarp + i.
  const int tile_rows = tile_tokens * gc;
  int max_pos = 0, min_pos = INT_MAX;
  for (int tt = tt0; tt < min(tt0 + tile_tokens, count); ++tt) {
    max_pos = max(max_pos, st.positions[first + tt]);
    min_pos = min(min_pos, st.positions[first + tt]);
  }
  // With a sliding window the tile's rows see nothing before the earliest row's window start.
  const int kb0 = window > 0 ? max(0, min_pos - window + 1) / kKeys * kKeys : 0;
  int row_tok[kRowsPerWarp], row_head[kRowsPerWarp], row_pos[kRowsPerWarp];
  bool row_ok[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    const int tt = tt0 + r / gc, g = r % gc;
    row_ok[i] = r < tile_rows && tt < count && g < ng;
    row_tok[i] = first + (row_ok[i] ? tt : 0);
    row_head[i] = kvh * G + g0 + g;
    row_pos[i] = row_ok[i] ? st.positions[first + tt] : -1;
  }
  // Query rows in shared memory as bf16 (unscaled; the score is scaled after the dot).
  for (int e = threadIdx.x; e < kRows * HD; e += blockDim.x) {
    const int r = e / HD, d = e % HD;
    const int tt = tt0 + r / gc, g = r % gc;
    const bool ok = r < tile_rows && tt < count && g < ng;
    sq[r][d] = ok ? q[(int64_t(first + tt) * n_heads + kvh * G + g0 + g) * HD + d] : __float2bfloat16_rn(0.f);
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDpl];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = kNoScore;
    l[i] = 0.f;
#pragma unroll
    for (int d = 0; d < kDpl; ++d) acc[i][d] = 0.f;
  }
  const int64_t row_stride = int64_t(n_kv) * HD;
  for (int kb = kb0; kb <= max_pos; kb += kKeys) {
    __syncthreads();  // previous chunk fully consumed (and sq written, first time)
    for (int e = threadIdx.x; e < kKeys * (HD / 8); e += blockDim.x) {
      const int j = e / (HD / 8), c = e % (HD / 8);
      const int p = kb + j;
      uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
      if (p <= max_pos) {
        const int64_t off = kv_slot(table, p, st.block_size) * row_stride + int64_t(kvh) * HD + c * 8;
        kv4 = *reinterpret_cast<const uint4*>(kc + off);
        vv4 = *reinterpret_cast<const uint4*>(vc + off);
      }
      *reinterpret_cast<uint4*>(&sk[j][c * 8]) = kv4;
      *reinterpret_cast<uint4*>(&sv[j][c * 8]) = vv4;
    }
    __syncthreads();
    // Scores: lane = key.
    float s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) s[i] = 0.f;
    const int r0 = warp * kRowsPerWarp;
#pragma unroll 4
    for (int c = 0; c < HD / 8; ++c) {
      float kf[8];
      unpack8(*reinterpret_cast<const uint4*>(&sk[lane][c * 8]), kf);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        float qf[8];
        unpack8(*reinterpret_cast<const uint4*>(&sq[r0 + i][c * 8]), qf);  // broadcast read
#pragma unroll
        for (int j = 0; j < 8; ++j) s[i] += qf[j] * kf[j];
      }
    }
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) s[i] = cap_score(s[i] * scale_log2, cap_log2);
    const int p = kb + lane;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      if (!row_ok[i]) continue;  // uniform over the warp
      const bool valid = p <= row_pos[i] && (window == 0 || p > row_pos[i] - window);
      float mx = valid ? s[i] : kNoScore;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mn = fmaxf(m[i], mx);
      const float corr = exp2f(m[i] - mn);
      const float e = valid ? exp2f(s[i] - mn) : 0.f;
      float es = e;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) es += __shfl_xor_sync(0xffffffffu, es, o);
      l[i] = l[i] * corr + es;
      m[i] = mn;
#pragma unroll
      for (int d = 0; d < kDpl; ++d) acc[i][d] *= corr;
      for (int j = 0; j < kKeys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, e, j);
        if (pj == 0.f) continue;  // masked keys (same for all lanes: pj is a broadcast)
#pragma unroll
        for (int d = 0; d < kDpl; ++d) acc[i][d] += pj * __bfloat162float(sv[j][lane * kDpl + d]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    if (!row_ok[i]) continue;
    const float inv = 1.f / l[i];
    bf16* o = out + (int64_t(row_tok[i]) * n_heads + row_head[i]) * HD + lane * kDpl;
#pragma unroll
    for (int d = 0; d < kDpl; ++d) o[d] = __float2bfloat16_rn(acc[i][d] * inv);
  }
}

template <int HD>
void launch(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale, float softcap,
            int window, cudaStream_t s) {
  const int G = n_heads / kv.n_kv_heads;
  const int gc = group_chunk(G);
  const int tile_tokens = kRows / gc;
  const int n_gchunks = (G + gc - 1) / gc;
  dim3 grid(unsigned((st.max_prefill_tokens + tile_tokens - 1) / tile_tokens), unsigned(kv.n_kv_heads * n_gchunks),
            unsigned(st.n_prefill));
  prefill_kernel<HD><<<grid, kWarps * 32, 0, s>>>(q, kv.k, kv.v, st, n_heads, kv.n_kv_heads, scale * kLog2e,
                                                  softcap * kLog2e, window, out);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace

void attention_prefill(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
                       float softcap, int window, cudaStream_t s) {
  if (st.n_prefill == 0) return;
  switch (kv.head_dim) {
    case 64: launch<64>(q, out, st, kv, n_heads, scale, softcap, window, s); break;
    case 96: launch<96>(q, out, st, kv, n_heads, scale, softcap, window, s); break;  // HD/32 = 3 output dims per lane
    case 128: launch<128>(q, out, st, kv, n_heads, scale, softcap, window, s); break;
    case 256: launch<256>(q, out, st, kv, n_heads, scale, softcap, window, s); break;
    default:
      throw Error("cuda attention: head_dim " + std::to_string(kv.head_dim) + " not supported (64, 96, 128, 256)");
  }
}

}  // namespace greta::cuda
