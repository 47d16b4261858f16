// Causal prefill attention on tensor cores (FlashAttention-2 style), head_dim 64 or 128: the
// kernel template (attention_prefill_tc.cu launches the production shape; the benchmark others).
//
// Block = 16 x WARPS consecutive new tokens of one sequence x one query head; 16 query rows a
// warp. The warp's Q rows stay in registers as mma A fragments for the whole loop. Tiles of 64
// keys of the paged cache stream into shared memory with cp.async, STAGES deep, so the next
// tiles' K and V are in flight while this one is multiplied:
//   S = Q K^T   mma.m16n8k16; K's B fragments by ldmatrix from row-major K (a lane's pair of
//               dims of one key is contiguous);
//   online softmax on the S fragments in registers (row max / sum across the 4 lanes of a quad);
//   O += P V    P, rounded to bf16, is the A operand as it stands (the accumulator layout of an
//               m16n8 tile pair is the A layout of one k16 slice); V's B fragments by
//               ldmatrix.trans from row-major V, so V is never transposed through scalar stores.
// Shared-memory rows are padded by 16 bytes: the 8 rows an ldmatrix phase reads fall on
// distinct banks. No score matrix in memory, K/V read once per (block of queries, head). Keys past a
// row's own position are masked, and with a sliding window those before its window (tiles
// before the block's first window start are skipped); a tile every row sees whole skips the
// mask. Blocks of the last query tiles (the most keys) are launched first. Fragment layouts:
// mma.cuh.
#pragma once
#include <cuda_bf16.h>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"

namespace greta::cuda::prefill_tc {

constexpr int kKeysTc = 64;  // keys per shared-memory tile

// HD: head_dim; WARPS: 16 query rows each; STAGES: key tiles in flight.
template <int HD, int WARPS, int STAGES>
struct TcShape {
  static constexpr int kRows = 16 * WARPS;                                     // query tokens per block
  static constexpr int kPad = HD + 8;                                          // bf16 per row: 16 bytes of padding
  static constexpr int kTile = kKeysTc * kPad;                                 // bf16 per K (or V) tile
  static constexpr size_t kBytes = size_t(STAGES) * 2 * kTile * sizeof(bf16);  // K and V, every stage
};

__device__ __forceinline__ uint32_t ld_u32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
// 16 bytes global -> shared, asynchronous; `valid` false writes zeros (no global read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// Four 8x8 bf16 matrices; lane l gives the row address of matrix l / 8, row l % 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// Starts the copy of keys kb .. kb + kKeysTc - 1 (zeros past kv_end) into one stage.
template <int HD, int THREADS>
__device__ __forceinline__ void load_tile(bf16* sk, bf16* sv, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                                          const int32_t* table, int block_size, int64_t row_stride, int kvh, int kb,
                                          int kv_end) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks a row
  for (int e = threadIdx.x; e < kKeysTc * kChunks; e += THREADS) {
    const int j = e / kChunks, c = e % kChunks, p = kb + j;
    const bool valid = p < kv_end;
    const int64_t off = valid ? kv_slot(table, p, block_size) * row_stride + int64_t(kvh) * HD + c * 8 : 0;
    cp_async16(sk + j * (HD + 8) + c * 8, kc + off, valid);
    cp_async16(sv + j * (HD + 8) + c * 8, vc + off, valid);
  }
}

// q, out [n_tokens, n_heads * HD]; grid (n_heads, n_prefill, ceil(max new tokens / kRows)).
template <int HD, int WARPS, int STAGES>
__global__ void __launch_bounds__(WARPS * 32, 8 / WARPS)
    prefill_tc_kernel(const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc, DevStep st,
                      int n_heads, int n_kv, float scale_log2, float cap_log2, int window, bf16* __restrict__ out) {
  using S = TcShape<HD, WARPS, STAGES>;
  extern __shared__ __align__(16) bf16 smem[];  // [stage][K, V][kKeysTc][kPad]
  const int seq = st.prefill_seqs[3 * blockIdx.y];
  const int first = st.prefill_seqs[3 * blockIdx.y + 1];
  const int count = st.prefill_seqs[3 * blockIdx.y + 2];
  const int q0 = int(gridDim.z - 1 - blockIdx.z) * S::kRows;  // the longest rows first
  if (q0 >= count) return;
  const int h = blockIdx.x, kvh = h / (n_heads / n_kv);
  const int32_t* table = st.block_ids + st.block_begin[seq];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // This lane's two query rows (tile-relative token indices) and their positions.
  const int ra = q0 + 16 * warp + g, rb = ra + 8;
  const bool oka = ra < count, okb = rb < count;
  const int pos_a = oka ? st.positions[first + ra] : -1, pos_b = okb ? st.positions[first + rb] : -1;
  // A sequence's new tokens have consecutive positions, so the block's last token sees the most
  // keys and its first token sees the fewest.
  const int pos_first = st.positions[first + q0];
  const int pos_last = st.positions[first + min(q0 + S::kRows, count) - 1];
  const int kv_end = pos_last + 1;
  // ... and the first token's window starts earliest.
  const int kv_begin = window > 0 ? max(0, pos_first - window + 1) / kKeysTc * kKeysTc : 0;
  // Rows absent from the tile (pos -1) see no key; a window's first position of each row.
  const int lo_a = window > 0 ? pos_a - window + 1 : 0, lo_b = window > 0 ? pos_b - window + 1 : 0;
  const int64_t row_stride = int64_t(n_kv) * HD;

  const int n_tiles = (kv_end - kv_begin + kKeysTc - 1) / kKeysTc;
  // The first STAGES - 1 tiles in flight; one commit group per tile, empty past the last, so
  // the wait below always leaves exactly the newer STAGES - 2 groups pending.
#pragma unroll
  for (int i = 0; i < STAGES - 1; ++i) {
    if (i < n_tiles)
      load_tile<HD, WARPS * 32>(smem + i * 2 * S::kTile, smem + i * 2 * S::kTile + S::kTile, kc, vc, table,
                                st.block_size, row_stride, kvh, kv_begin + i * kKeysTc, kv_end);
    cp_async_commit();
  }

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
  // ldmatrix row addresses of this lane: matrix l / 8, row l % 8.
  const int lm = lane / 8, lr = lane % 8;

  for (int it = 0; it < n_tiles; ++it) {
    const int kb = kv_begin + it * kKeysTc;
    {  // tile it + STAGES - 1 into the stage that tile it - 1 left (every warp passed the barrier
       // at the end of the last iteration)
      const int nt = it + STAGES - 1;
      bf16* nk = smem + (nt % STAGES) * 2 * S::kTile;
      if (nt < n_tiles)
        load_tile<HD, WARPS * 32>(nk, nk + S::kTile, kc, vc, table, st.block_size, row_stride, kvh,
                                  kv_begin + nt * kKeysTc, kv_end);
      cp_async_commit();
    }
    cp_async_wait<STAGES - 1>();
    __syncthreads();  // this tile's copies, from every thread, have landed
    const bf16* sk = smem + (it % STAGES) * 2 * S::kTile;
    const bf16* sv = sk + S::kTile;

    // S = Q K^T for the tile: 8 n-tiles of 8 keys.
    float sc[kKeysTc / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeysTc / 8; ++nt) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
      const bf16* kr = sk + (8 * nt + lr) * S::kPad + 8 * lm;
#pragma unroll
      for (int s4 = 0; s4 < HD / 32; ++s4) {  // 32 dims: two k-slices
        uint32_t b[4];
        ldmatrix_x4(b, kr + 32 * s4);
        mma_bf16(sc[nt], qa[2 * s4][0], qa[2 * s4][1], qa[2 * s4][2], qa[2 * s4][3], b[0], b[1]);
        mma_bf16(sc[nt], qa[2 * s4 + 1][0], qa[2 * s4 + 1][1], qa[2 * s4 + 1][2], qa[2 * s4 + 1][3], b[2], b[3]);
      }
    }
    // Scale, mask, running max (over the quad: the 4 lanes hold a row's 64 keys between them).
    // Every row of the block sees the whole tile when it ends at or before the first row's
    // position and starts inside the last row's window.
    const bool whole = kb + kKeysTc - 1 <= pos_first && (window <= 0 || kb >= pos_last - window + 1);
    float ta = kNoScore, tb = kNoScore;
#pragma unroll
    for (int nt = 0; nt < kKeysTc / 8; ++nt) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int key = kb + 8 * nt + 2 * t + i;
        const bool va = whole || (key <= pos_a && key >= lo_a), vb = whole || (key <= pos_b && key >= lo_b);
        sc[nt][i] = va ? cap_score(sc[nt][i] * scale_log2, cap_log2) : kNoScore;
        sc[nt][2 + i] = vb ? cap_score(sc[nt][2 + i] * scale_log2, cap_log2) : kNoScore;
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
    uint32_t pa[kKeysTc / 8][2];  // [n-tile][row a / row b]: keys 2t, 2t+1 of the n-tile
    auto p2 = [](float s, float m) { return s == kNoScore ? 0.f : exp2f(s - m); };
#pragma unroll
    for (int nt = 0; nt < kKeysTc / 8; ++nt) {
      const __nv_bfloat162 A = __floats2bfloat162_rn(p2(sc[nt][0], na), p2(sc[nt][1], na));
      const __nv_bfloat162 B = __floats2bfloat162_rn(p2(sc[nt][2], nb), p2(sc[nt][3], nb));
      l_a += __low2float(A) + __high2float(A);
      l_b += __low2float(B) + __high2float(B);
      pa[nt][0] = *reinterpret_cast<const uint32_t*>(&A);
      pa[nt][1] = *reinterpret_cast<const uint32_t*>(&B);
    }
    // O += P V: k-slices of 16 keys; V's B fragments for two 8-dim n-tiles per ldmatrix.trans
    // (matrices: keys +0..7 / +8..15 of the slice, x dims 8d.. / 8d + 8..).
#pragma unroll
    for (int ks = 0; ks < kKeysTc / 16; ++ks) {
      const bf16* vr = sv + (16 * ks + 8 * (lm & 1) + lr) * S::kPad + 8 * (lm >> 1);
#pragma unroll
      for (int d = 0; d < HD / 8; d += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vr + 8 * d);
        mma_bf16(o[d], pa[2 * ks][0], pa[2 * ks][1], pa[2 * ks + 1][0], pa[2 * ks + 1][1], b[0], b[1]);
        mma_bf16(o[d + 1], pa[2 * ks][0], pa[2 * ks][1], pa[2 * ks + 1][0], pa[2 * ks + 1][1], b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
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

// One launch (the kernel's shared memory must have been allowed past 48 KB first).
template <int HD, int WARPS, int STAGES>
void launch(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale, float softcap,
            int window, cudaStream_t s) {
  using S = TcShape<HD, WARPS, STAGES>;
  dim3 grid(unsigned(n_heads), unsigned(st.n_prefill), unsigned((st.max_prefill_tokens + S::kRows - 1) / S::kRows));
  prefill_tc_kernel<HD, WARPS, STAGES><<<grid, WARPS * 32, S::kBytes, s>>>(
      q, kv.k, kv.v, st, n_heads, kv.n_kv_heads, scale * kLog2e, softcap * kLog2e, window, out);
}

}  // namespace greta::cuda::prefill_tc
