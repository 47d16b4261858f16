// The batched GEMM over weights kept packed on the device (quant_planes.h): out [n, m] (+)=
// x [n, k] @ w [m, k]^T for steps of more tokens than the decode GEMV takes and fewer than a
// prefill (large decode batches, serving), with the weights dequantized in registers and fed
// to tensor cores.
//
// Why not the decode GEMV at 32 tokens: a GEMV block owns 16 rows, so every block re-reads all
// of x ([n, k]) through L2: for n = 32 that is 4 bytes of x for every weight, ~28 GB a
// Llama-2-7B step against 3.8 GB of 4-bit weights, and the step is bound by L2 instead of
// DRAM. Why not the dequantized slices and cuBLASLt: they write and re-read every weight as
// bf16, 4x the bytes of a 4-bit weight twice.
//
// Here a block owns 16 * kWarps rows and one tile of 8 * NT tokens, and stages x's tile in
// shared memory once for all its warps (cp.async, kStages deep). Each warp owns 16 rows and
// walks k in chunks; a lane dequantizes its weight granules exactly as the GEMV does
// (gemv_weights.cuh WeightQuant, with the GEMV's trick of defining the mma's k order by the
// registers a lane already holds: gemv_kernel.cuh, top), so the A operand never touches shared
// memory, and reads its B operand (x) from the staged tile. The next chunk's weights are
// loaded before the current chunk's mmas. Row tiles x token tiles rarely fill the GPU, so k is
// split over kSplit blocks (the plan below); the last block of a tile to finish adds the parts
// in part order (so results do not depend on timing) and writes out.
//
// Staged x rows are padded and the 16-byte pieces of a row stored in the order the lanes read
// them, piece t * kSub + q at slot q * 4 + t, so the 8 lanes of a quarter-warp read 128
// distinct bytes: no bank conflicts.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm_packed.h"
#include "backend/cuda/gemm_packed_store.cuh"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/k_split.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kStages = 3;
// Blocks an SM the k split aims at: 6 (shorter blocks) measured slower.
constexpr int64_t kBlocksPerSm = 2;
// 16-row slabs a warp: 2 for the 4/5/6-bit formats (half the shared-memory reads a weight), 1 for
// the 8-bit ones, whose second slab's registers measured slower.
constexpr int slabs_of(DType t) { return byte_quants(t) ? 1 : 2; }

template <DType T>
constexpr int chunk_values() {
  return 32 * WeightQuant<T, true>::kSub;
}

// Padded row of one staged x tile: the chunk's values plus 64 bytes, which puts rows 2j and
// 2j + 1 on opposite halves of the banks.
template <DType T>
constexpr int stage_row_u4() {
  return (2 * chunk_values<T>() + 64) / 16;
}

// RS: 16-row slabs a warp (a block owns 16 RS kWarps rows). Each staged x piece a lane reads
// feeds RS slabs, so RS = 2 halves the shared-memory reads per weight, for more registers.
template <DType T, int NT, int RS>
__global__ void __launch_bounds__(kWarps * 32) gemm_packed_kernel(PackedGemmArgs p) {
  // d q + m in fp32 (EXACT_MIN): here a dequantized value feeds 8 NT tokens, so the exact
  // form's extra instructions are cheap, and its error is half the bf16x2 form's.
  using WF = WeightQuant<T, true>;
  using Raw = typename WF::Raw;
  constexpr int kSub = WF::kSub, kChunk = 32 * kSub, kRow = stage_row_u4<T>();
  constexpr int kTokens = 8 * NT;
  constexpr int kPieces = kTokens * kChunk / 8;  // 16-byte pieces of x a stage
  __shared__ uint4 xs[kStages][kTokens][kRow];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t m = p.m, k = p.k;
  const int n = p.n;
  const int tok0 = int(blockIdx.x) * kTokens;
  const int64_t tile = blockIdx.y;
  const int part = int(blockIdx.z);
  const int64_t row0 = (tile * kWarps + warp) * 16 * RS;  // this warp's first row
  const int64_t n_chunks = (k + kChunk - 1) / kChunk;
  const int64_t c_begin = int64_t(part) * p.chunks_per_split;
  const int64_t c_end = min(n_chunks, c_begin + p.chunks_per_split);
  const bf16* __restrict__ w = static_cast<const bf16*>(p.w);
  // Slab r: rows row0 + 16 r + g (A rows g) and + 8 (rows g + 8). Rows past m read row m - 1
  // and tokens past n read token n - 1 (valid memory); their results are dropped at the store.
  typename WF::Lane wl[RS][2];
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) wl[r][h] = WF::lane(w, min(row0 + 16 * r + 8 * h + g, m - 1), m, k, 0, t);

  // x's chunk c into stage s: piece pc of token row r is values [c kChunk + 8 pc, + 8).
  auto stage_x = [&](int64_t c, int s) {
    for (int e = threadIdx.x; e < kPieces; e += kWarps * 32) {
      const int r = e / (kChunk / 8), pc = e % (kChunk / 8);
      const int64_t v = c * kChunk + 8 * pc;
      const bf16* src = p.x + int64_t(min(tok0 + r, n - 1)) * k + min(v, k - 8);
      cp_async16(&xs[s][r][(pc % kSub) * 4 + pc / kSub], src, v < k ? 16 : 0);
    }
  };
  // A lane's granule of chunk c is whole or past k (k % (8 kSub) == 0, checked by the host).
  auto granule_in = [&](int64_t c) { return c * kChunk + 8 * kSub * t < k; };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (c_begin + s < c_end) stage_x(c_begin + s, s);
    cp_async_commit();
  }
  Raw cur[RS][2];
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) cur[r][h] = granule_in(c_begin) ? WF::load(wl[r][h], c_begin) : WF::zero();
  float acc[RS][NT][4] = {};
  for (int64_t c = c_begin; c < c_end; ++c) {
    Raw nxt[RS][2];
    const bool more = c + 1 < c_end && granule_in(c + 1);
#pragma unroll
    for (int r = 0; r < RS; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) nxt[r][h] = more ? WF::load(wl[r][h], c + 1) : WF::zero();
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c is staged, and every warp is done with the stage refilled next
    if (c + kStages - 1 < c_end) stage_x(c + kStages - 1, int((c + kStages - 1 - c_begin) % kStages));
    cp_async_commit();
    const int s = int((c - c_begin) % kStages);
    uint4 da[RS][kSub], db[RS][kSub];
#pragma unroll
    for (int r = 0; r < RS; ++r) {
      WF::dequant(wl[r][0], cur[r][0], c, da[r]);
      WF::dequant(wl[r][1], cur[r][1], c, db[r]);
    }
#pragma unroll
    for (int q = 0; q < kSub; ++q) {
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        const uint4 vx = xs[s][8 * i + g][q * 4 + t];
#pragma unroll
        for (int r = 0; r < RS; ++r) {
          mma_bf16(acc[r][i], da[r][q].x, db[r][q].x, da[r][q].y, db[r][q].y, vx.x, vx.y);
          mma_bf16(acc[r][i], da[r][q].z, db[r][q].z, da[r][q].w, db[r][q].w, vx.z, vx.w);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RS; ++r) cur[r][0] = nxt[r][0], cur[r][1] = nxt[r][1];
  }
  cp_async_wait<0>();

  packed_gemm_store<kWarps, RS, NT>(p, acc, tok0, row0);
}

template <DType T>
struct LaunchPacked {
  static void run(const PackedGemmArgs& a, const PackedGemmPlan& plan, cudaStream_t s) {
    const dim3 grid(unsigned(plan.token_tiles), unsigned(plan.row_tiles), unsigned(plan.splits));
    if (plan.slabs != slabs_of(T)) throw Error("cuda packed gemm: a plan made for another format");
    if (plan.tile_tokens == 16) gemm_packed_kernel<T, 2, slabs_of(T)><<<grid, kWarps * 32, 0, s>>>(a);
    else gemm_packed_kernel<T, 4, slabs_of(T)><<<grid, kWarps * 32, 0, s>>>(a);
    GRETA_CUDA_LAUNCH_CHECK();
  }
};

template <DType T>
struct ChunkOf {
  static void run(int& out) { out = chunk_values<T>(); }
};

}  // namespace

PackedGemmPlan packed_gemm_plan(DType t, int64_t n, int64_t m, int64_t k, int n_sms) {
  PackedGemmPlan p;
  int chunk = 0;
  on_packed_format<ChunkOf>(t, chunk);
  p.tile_tokens = n <= 16 ? 16 : 32;
  p.slabs = slabs_of(t);
  p.token_tiles = (n + p.tile_tokens - 1) / p.tile_tokens;
  const int64_t tile_rows = 16 * kWarps * p.slabs;
  p.row_tiles = (m + tile_rows - 1) / tile_rows;
  // About kBlocksPerSm blocks an SM, each keeping at least 8 chunks of k (fewer and the ramp of
  // its weight stream dominates).
  const KSplit ks = split_k((k + chunk - 1) / chunk, p.row_tiles * p.token_tiles, kBlocksPerSm * std::max(n_sms, 1), 8);
  p.chunks_per_split = ks.chunks_per_split;
  p.splits = ks.splits;
  return p;
}

size_t packed_gemm_scratch_floats(const PackedGemmPlan& p) { return tiled_gemm_scratch_floats(p, kWarps); }

size_t packed_gemm_counters(const PackedGemmPlan& p) { return tiled_gemm_counters(p); }

void packed_gemm(DType t, PackedGemmArgs a, PackedGemmPlan plan, cudaStream_t s) {
  if (a.n <= 0 || a.m <= 0) return;
  a.chunks_per_split = plan.chunks_per_split;
  on_packed_format<LaunchPacked>(t, a, plan, s);
}

}  // namespace greta::cuda
