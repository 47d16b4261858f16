// The FP8 W8A8 GEMM for decode batches: out [n, m] (+)= (xq [n, k] @ wq [m, k]^T) x_scale[token]
// w_scale[row] (+ bias[row]) with e4m3 activations and weights, fp32 accumulation on the FP8
// tensor cores (mma.m16n8k32.e4m3), for steps of 9 to 64 tokens.
//
// Why not cuBLASLt there: its FP8 GEMM at 64 tokens reads an 11008 x 4096 weight at ~54% of
// the copy bandwidth (docs/notes/fp8-gemm.md), and a decode batch's step is its weight stream.
// Why not the decode GEMV: it dequantizes every weight to bf16 for a bf16 mma (the W8A16 path),
// ~1.5 instructions a value, and by 32 tokens its issue rate, not DRAM, binds. Here the weight
// bytes go from the load straight into the mma: a lane's 16-byte load of a row is the A operand
// of two mmas, and the loop is loads and mmas only.
//
// Fragment order (PTX ISA, mma.m16n8k32 with 8-bit types), lane = 4g + t:
//   A: a0 (row g, k 4t..4t+3)  a1 (row g+8, k 4t..)  a2 (row g, k 16+4t..)  a3 (row g+8, k 16+4t..)
//   B: b0 (k 4t..4t+3, col g)  b1 (k 16+4t.., col g)
//   C: c0, c1 (row g, cols 2t, 2t+1)  c2, c3 (row g+8, cols 2t, 2t+1)
// As in the GEMV (gemv_kernel.cuh, top), the mma's k order is defined by the registers a lane
// holds: lane t loads bytes [16t, 16t + 16) of a 64-value chunk of its rows and of its token's x
// row; words .x/.y feed one mma and .z/.w the next, so A and B see the same k in every slot and
// the 4 lanes of a group cover the chunk once.
//
// Work split: a block has kWarps warps, each owning RS 16-row slabs, and one tile of 8 NT
// tokens; a warp walks its part of k with its weights one chunk ahead of its mmas, x's chunks
// staged in shared memory for the block's warps (a barrier a chunk). k is
// split over blocks until the GPU has a few blocks an SM (W8A8Tuning); the last block of a tile
// to finish adds the parts in part order (so results do not depend on timing) and writes out.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_w8a8.h"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/k_split.h"
#include "backend/cuda/last_block.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kChunk = 64;  // values of k a chunk: 4 lanes x 16 bytes
// A lane loads its weights one chunk ahead of its mmas: 2 ahead took 170-190 registers a thread
// (3 blocks an SM at most) where 1 takes 99-140; with 1 a lane still has 32-64 bytes in flight.
// x's chunks are staged kStages deep in shared memory: read from global memory right before
// each chunk's mmas, they made every chunk wait a round trip (docs/notes/fp8-gemm.md).
constexpr int kStages = 3;
// Blocks an SM the register budget keeps room for (168 registers a thread): with x staged, the
// 32-token two-slab tile otherwise took 176 (2 blocks an SM).
constexpr int kMinBlocks = 3;

template <int NT, int RS>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks) w8a8_gemm_kernel(W8A8GemmArgs p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t k = p.k;
  const int n = p.n;
  const int tok0 = int(blockIdx.x) * 8 * NT;
  const int64_t tile = blockIdx.y;
  const int part = int(blockIdx.z);
  // The segment of this row tile, picked with selects on kernel parameters (a run-time index into
  // them makes ptxas copy the parameters to local memory).
  const bool s1 = tile >= p.blk1, s2 = tile >= p.blk2;
  const int64_t m = s2 ? p.seg2.m : s1 ? p.seg1.m : p.seg0.m;
  const uint8_t* __restrict__ wq = s2 ? p.seg2.wq : s1 ? p.seg1.wq : p.seg0.wq;
  const int64_t seg_tile = tile - (s2 ? p.blk2 : s1 ? p.blk1 : 0);
  const int64_t row0 = (seg_tile * kWarps + warp) * 16 * RS;  // this warp's first row
  const int64_t c_begin = int64_t(part) * p.chunks_per_split;
  const int64_t c_end = min(k / kChunk, c_begin + p.chunks_per_split);
  // Slab r: rows row0 + 16 r + g (A rows g) and + 8 (rows g + 8). Rows past m read row m - 1
  // and tokens past n read token n - 1 (valid memory); their results are dropped at the store.
  const uint8_t* wr[RS][2];
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) wr[r][h] = wq + min(row0 + 16 * r + 8 * h + g, m - 1) * k + 16 * t;
  // x's chunk c for the block's tokens, staged in shared memory kStages deep (cp.async): token
  // tok0 + r's 64 bytes at xs[.][r] (rows past n copy row n - 1). A quarter-warp's 16-byte reads
  // (2 tokens x 4 lanes) cover all 32 banks.
  constexpr int kTok = 8 * NT;
  __shared__ __align__(16) uint8_t xs[kStages][kTok][kChunk];
  auto stage = [&](int64_t c, int st) {
    for (int e = threadIdx.x; e < kTok * kChunk / 16; e += kWarps * 32) {
      const int r = e / (kChunk / 16), pc = e % (kChunk / 16);
      cp_async16(&xs[st][r][16 * pc], p.xq + int64_t(min(tok0 + r, n - 1)) * k + c * kChunk + 16 * pc, 16);
    }
  };
  auto load_w = [&](int64_t c, uint4(&w)[RS][2]) {
#pragma unroll
    for (int r = 0; r < RS; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) w[r][h] = ld_stream(wr[r][h] + c * kChunk);
  };
  float acc[RS][NT][4] = {};
  auto mma_chunk = [&](int st, const uint4(&w)[RS][2]) {
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const uint4 vx = *reinterpret_cast<const uint4*>(&xs[st][8 * i + g][16 * t]);
#pragma unroll
      for (int r = 0; r < RS; ++r) {
        mma_e4m3(acc[r][i], w[r][0].x, w[r][1].x, w[r][0].y, w[r][1].y, vx.x, vx.y);
        mma_e4m3(acc[r][i], w[r][0].z, w[r][1].z, w[r][0].w, w[r][1].w, vx.z, vx.w);
      }
    }
  };

  // PDL (pdl.cuh): the first weights never depend on the previous kernel, so they are requested
  // before waiting for it; x, the scales, out and the split scratch only after.
  pdl_allow_dependents();
  uint4 cur[RS][2];
  if (c_begin < c_end) load_w(c_begin, cur);
  pdl_wait();
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (c_begin + st < c_end) stage(c_begin + st, st);
    cp_async_commit();
  }
  // Rolled: unrolled, the compiler kept several iterations' loads live (~50 more registers).
#pragma unroll 1
  for (int64_t c = c_begin; c < c_end; ++c) {
    const bool more = c + 1 < c_end;
    uint4 nxt[RS][2];
    if (more) load_w(c + 1, nxt);  // in flight while this chunk's mmas run
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c is staged, and every warp is done with the stage refilled next
    if (c + kStages - 1 < c_end) stage(c + kStages - 1, int((c + kStages - 1 - c_begin) % kStages));
    cp_async_commit();
    mma_chunk(int((c - c_begin) % kStages), cur);
    if (more) {
#pragma unroll
      for (int r = 0; r < RS; ++r) cur[r][0] = nxt[r][0], cur[r][1] = nxt[r][1];
    }
  }
  cp_async_wait<0>();

  // The block's sums through shared memory, [token][row of the block]: the split-K parts and
  // the stores then go row-contiguous (coalesced), and the epilogue's loop stays rolled (fully
  // unrolled over a lane's accumulators it took 40 more registers than the main loop).
  constexpr int kTokens = 8 * NT, kRows = 16 * RS * kWarps, kItems = kTokens * kRows;
  constexpr int kPitch = kRows + 4;  // rows 2t apart land 8t banks apart: no conflicts below
  __shared__ float red[kTokens][kPitch];
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) red[8 * i + 2 * t + (j & 1)][(warp * RS + r) * 16 + g + 8 * (j >> 1)] = acc[r][i][j];
  __syncthreads();
  if (gridDim.z > 1) {
    // Publish this part's sums, count arrivals; the last block of the tile adds the others in
    // part order and goes on to the store.
    const int64_t slot = int64_t(tile) * gridDim.x + blockIdx.x;
    float* parts = p.scratch + slot * gridDim.z * kItems;
    for (int e = threadIdx.x; e < kItems; e += kWarps * 32) parts[part * kItems + e] = red[e / kRows][e % kRows];
    if (!last_to_arrive(p.counters + slot, int(gridDim.z))) return;
    // A thread's kPer items (its own: no barrier after) summed part by part, all of a part's loads
    // in flight together: item by item, each load waited for the one before (measured: the last
    // block's sum of 8-13 parts took tens of us, the chain of GEMMs 2-3x the weight stream).
    constexpr int kPer = kItems / (kWarps * 32);
    static_assert(kItems % (kWarps * 32) == 0, "whole items a thread");
    float total[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) total[u] = 0.f;
    for (int q = 0; q < int(gridDim.z); ++q) {
      float v[kPer];
#pragma unroll
      for (int u = 0; u < kPer; ++u) {
        const int e = threadIdx.x + u * kWarps * 32;
        v[u] = q == part ? red[e / kRows][e % kRows] : __ldcg(parts + q * kItems + e);
      }
#pragma unroll
      for (int u = 0; u < kPer; ++u) total[u] += v[u];
    }
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = threadIdx.x + u * kWarps * 32;
      red[e / kRows][e % kRows] = total[u];
    }
  }
  // As the cuBLASLt path rounds: the scaled product plus out (when accumulating) rounded to bf16
  // once, then the bias added to the rounded value (its add_bias_rows).
  const float* __restrict__ w_scale = s2 ? p.seg2.w_scale : s1 ? p.seg1.w_scale : p.seg0.w_scale;
  const float* __restrict__ bias = s2 ? p.seg2.bias : s1 ? p.seg1.bias : p.seg0.bias;
  bf16* __restrict__ out = s2 ? p.seg2.out : s1 ? p.seg1.out : p.seg0.out;
  for (int e = threadIdx.x; e < kItems; e += kWarps * 32) {
    const int tok = tok0 + e / kRows;
    const int64_t row = seg_tile * kRows + e % kRows;
    if (tok >= n || row >= m) continue;
    bf16* o = out + int64_t(tok) * m + row;
    float v = red[e / kRows][e % kRows] * p.x_scale[tok] * w_scale[row];
    if (p.accumulate) v += __bfloat162float(*o);
    if (bias) v = __bfloat162float(__float2bfloat16_rn(v)) + bias[row];
    *o = __float2bfloat16_rn(v);
  }
}

int64_t tile_rows(const W8A8GemmPlan& p) { return 16 * kWarps * p.slabs; }

}  // namespace

W8A8GemmPlan w8a8_gemm_plan(int64_t n, std::initializer_list<int64_t> ms, int64_t k, int n_sms, W8A8Tuning tune) {
  W8A8GemmPlan p;
  p.tile_tokens = n <= 16 ? 16 : n <= 32 ? 32 : 64;
  // A 64-token tile takes one slab a warp: its 8 x operands and accumulators leave no room for
  // the second slab's weights in flight.
  p.slabs = p.tile_tokens == 64 ? 1 : tune.slabs == 1 ? 1 : 2;
  p.token_tiles = (n + p.tile_tokens - 1) / p.tile_tokens;
  p.row_tiles = 0;
  for (const int64_t m : ms) p.row_tiles += (m + tile_rows(p) - 1) / tile_rows(p);
  const KSplit ks = split_k(k / kChunk, p.row_tiles * p.token_tiles, int64_t(tune.blocks_per_sm) * std::max(n_sms, 1),
                            tune.min_chunks);
  p.chunks_per_split = ks.chunks_per_split;
  p.splits = ks.splits;
  return p;
}

size_t w8a8_gemm_scratch_floats(const W8A8GemmPlan& p) { return tiled_gemm_scratch_floats(p, kWarps); }

size_t w8a8_gemm_counters(const W8A8GemmPlan& p) { return tiled_gemm_counters(p); }

void w8a8_gemm(W8A8GemmArgs a, W8A8GemmPlan plan, cudaStream_t s) {
  if (a.n <= 0 || plan.row_tiles <= 0) return;
  const auto tiles = [&](const W8A8Seg& sg) { return (sg.m + tile_rows(plan) - 1) / tile_rows(plan); };
  a.blk1 = tiles(a.seg0);
  a.blk2 = a.blk1 + tiles(a.seg1);
  if (a.n > plan.token_tiles * plan.tile_tokens || a.k % kChunk != 0 || a.blk2 + tiles(a.seg2) != plan.row_tiles ||
      (plan.slabs != 1 && (plan.slabs != 2 || plan.tile_tokens == 64)))
    throw Error("cuda w8a8 gemm: a plan made for another shape");
  a.chunks_per_split = plan.chunks_per_split;
  const dim3 grid(unsigned(plan.token_tiles), unsigned(plan.row_tiles), unsigned(plan.splits));
  const auto go = [&](auto kernel) { launch_pdl(kernel, grid, dim3(kWarps * 32), 0, s, a); };
  if (plan.tile_tokens == 16) plan.slabs == 1 ? go(w8a8_gemm_kernel<2, 1>) : go(w8a8_gemm_kernel<2, 2>);
  else if (plan.tile_tokens == 32) plan.slabs == 1 ? go(w8a8_gemm_kernel<4, 1>) : go(w8a8_gemm_kernel<4, 2>);
  else go(w8a8_gemm_kernel<8, 1>);
}

}  // namespace greta::cuda
