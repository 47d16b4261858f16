// An experiment outside src/: the batched packed GEMM (src/backend/cuda/gemm_packed.cu) with
// its weights staged in shared memory instead of loaded into registers a chunk ahead, measured
// against the engine's kernel by bench/gpu_packed_gemm_bench.cu (docs/notes/quantized-weights.md,
// "Batched steps", has the numbers and why it is not the engine's). One block: 16 * kGemmWarps *
// RS rows of out [n, m] (+)= x [n, k] @ w [m, k]^T for one tile of 8 NT tokens and one part of k;
// the engine's plan (packed_gemm_plan) cuts the grid. Its offsets are 32-bit: weights under
// 4 GiB, as the bench's are.
//
// Each chunk of k (the format's 32 * kSub values a row) is staged in shared memory by cp.async,
// STAGES chunks deep: x's tile and the block's weights in their packed bytes (the quants, the
// high bits, and the 4-byte words that cover the chunk's scale records). The staged weights
// keep many bytes in flight an SM whatever registers the dequantization takes. Each warp owns RS
// 16-row slabs and walks k; a lane takes its weight granules from the staged bytes and
// dequantizes them exactly as the GEMV does (gemv_weights.cuh WeightQuant, with the GEMV's trick
// of defining the mma's k order by the registers a lane holds: gemv_kernel.cuh, top), so
// dequantized weights never touch shared memory. When k is split over blocks (gridDim.z parts),
// the last block of a tile to finish adds the parts in part order (so results do not depend on
// timing) and writes out.
//
// Staged x rows are padded and the 16-byte pieces of a row stored in the order the lanes read
// them, piece t * kSub + q at slot q * 4 + t, so the 8 lanes of a quarter-warp read 128
// distinct bytes: no bank conflicts.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm_packed.h"
#include "backend/cuda/gemm_packed_store.cuh"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

constexpr int kGemmWarps = 4;

// One stage of a block's shared memory for format T, NT token tiles and RS slabs a warp:
//   x   [8 NT tokens][kXRow] uint4   the chunk of x, padded rows (see the top)
//   q   [kRows][4] uint4             the rows' 64 bytes of quants of the chunk
//   hi  [kRows][kHiWords] uint32     Q5: 16 bytes of high bits a row; Q6_K: 32
//   sc  [kRows][kScWords] uint32     the 4-byte-aligned words covering the chunk's scale records
//   d   [kRows] uint32               Q6_K: the word holding the super-block's fp16 d
template <DType T, int NT, int RS>
struct Stage {
  using WF = WeightQuant<T, true>;
  static constexpr int kSub = WF::kSub, kChunk = 32 * kSub;
  static constexpr int kTokens = 8 * NT, kRows = 16 * kGemmWarps * RS;
  // Padded x row: the chunk's values plus 64 bytes, which puts rows 2j and 2j + 1 on opposite
  // halves of the banks.
  static constexpr int kXRow = (2 * kChunk + 64) / 16;
  static constexpr int kHiWords = WF::kHi1 ? 4 : WF::kHi2 ? 8 : 0;
  // Bytes of scale records a chunk of a row spans; its start is 2-byte aligned at least, so
  // (span + 2) rounded up to words covers it. The K-quants' 16-byte record is 16-byte aligned:
  // exactly 4 words, so a lane reads it as one uint4.
  static constexpr int kScSpan = int(WF::sc_at(WF::kGroups - 1) + WF::kScBytes - WF::sc_at(0));
  static constexpr int kScWords = WF::kK ? 4 : (kScSpan + 2 + 3) / 4;
  static constexpr int kDWords = WF::kHi2 ? 1 : 0;
  static constexpr int kXRegion = kTokens * kXRow * 16, kQRegion = kRows * 64;
  static constexpr int kHiRegion = kRows * kHiWords * 4, kScRegion = kRows * kScWords * 4;
  static constexpr int kBytes = kXRegion + kQRegion + kHiRegion + kScRegion + kRows * kDWords * 4;
  static_assert(kXRegion % 16 == 0 && kQRegion % 16 == 0 && kHiRegion % 16 == 0 && kScRegion % 16 == 0);
  static_assert(WF::sc_at(WF::kGroups) - WF::sc_at(0) == int64_t(kScSpan) || WF::kK || WF::kHi2,
                "a chunk's scale records are contiguous, one chunk after another");
};

// Dynamic shared memory of one block of gemm_packed_kernel<T, NT, RS, STAGES, *>.
template <DType T, int NT, int RS, int STAGES>
constexpr int gemm_packed_smem() {
  return STAGES * Stage<T, NT, RS>::kBytes;
}

// RS: 16-row slabs a warp (a block owns 16 RS kGemmWarps rows). Each staged x piece a lane reads
// feeds RS slabs, so RS = 2 halves the shared-memory reads per weight, for more registers.
// STAGES: chunks staged ahead. One accumulator set a tile: a second one, taking each pair's other
// k half so that consecutive mmas are independent, measured no faster
// (docs/notes/quantized-weights.md).
template <DType T, int NT, int RS, int STAGES>
__global__ void __launch_bounds__(kGemmWarps * 32) gemm_packed_kernel(PackedGemmArgs p) {
  // d q + m in fp32 (EXACT_MIN): here a dequantized value feeds 8 NT tokens, so the exact
  // form's extra instructions are cheap, and its error is half the bf16x2 form's.
  using S = Stage<T, NT, RS>;
  using WF = typename S::WF;
  using Raw = typename WF::Raw;
  constexpr int kStages = STAGES, kThreads = kGemmWarps * 32;
  constexpr int kSub = S::kSub, kChunk = S::kChunk, kTokens = S::kTokens, kRows = S::kRows;
  constexpr int kG = WF::kGroups;
  // What a thread stages a chunk: the same pieces every chunk, at offsets precomputed below (the
  // per-chunk index arithmetic of 64-bit offsets took more instructions than the mmas).
  constexpr int kXPieces = kTokens * kChunk / 8;  // 16-byte pieces of x a stage
  constexpr int kHiDiv = S::kHiWords > 0 ? S::kHiWords : 1;
  constexpr int kXPer = kXPieces / kThreads, kQPer = kRows * 4 / kThreads;
  constexpr int kHiPer = kRows * S::kHiWords / kThreads, kScPer = (kRows * S::kScWords + kThreads - 1) / kThreads;
  static_assert(kXPieces % kThreads == 0 && kRows * 4 % kThreads == 0 && kRows * S::kHiWords % kThreads == 0 &&
                    kThreads % (kChunk / 8) == 0 && kThreads % kHiDiv == 0 && kRows <= kThreads,
                "every thread stages the same pieces of each chunk");
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t m = p.m, k = p.k;
  const int n = p.n;
  const int tok0 = int(blockIdx.x) * kTokens;
  const int64_t block_row0 = int64_t(blockIdx.y) * kRows;
  const int64_t n_chunks = (k + kChunk - 1) / kChunk;
  const int64_t c_begin = int64_t(blockIdx.z) * p.chunks_per_split;
  const int64_t c_end = min(n_chunks, c_begin + p.chunks_per_split);
  const QuantPlanes P = quant_planes(T, m, k);
  // Byte offsets fit 32 bits: the host takes this kernel only for weights under 4 GiB.
  const uint8_t* __restrict__ wq_g = static_cast<const uint8_t*>(p.w) + P.q;
  const uint8_t* __restrict__ hi_g = static_cast<const uint8_t*>(p.w) + P.hi;
  const uint8_t* __restrict__ sc_g = static_cast<const uint8_t*>(p.w) + P.sc;
  const uint8_t* __restrict__ d_g = static_cast<const uint8_t*>(p.w) + P.d;
  const uint32_t q_row = uint32_t(plane_q_row(T, k)), hi_row = uint32_t(plane_hi_row(T, k));
  const uint32_t sc_row = uint32_t(plane_sc_row(T, k)), d_row = uint32_t(plane_d_row(T, k));
  // Rows past m read row m - 1 and tokens past n read token n - 1 (valid memory); their
  // results are dropped at the store.
  auto row_of = [&](int r) { return uint32_t(min(block_row0 + r, m - 1)); };
  auto stage_at = [&](int s) { return smem + size_t(s) * S::kBytes; };
  auto xs_of = [&](uint8_t* st) { return reinterpret_cast<uint4*>(st); };
  auto wq_of = [&](uint8_t* st) { return reinterpret_cast<uint4*>(st + S::kXRegion); };
  auto hi_of = [&](uint8_t* st) { return reinterpret_cast<uint32_t*>(st + S::kXRegion + S::kQRegion); };
  auto sc_of = [&](uint8_t* st) { return reinterpret_cast<uint32_t*>(st + S::kXRegion + S::kQRegion + S::kHiRegion); };
  auto d_of = [&](uint8_t* st) {
    return reinterpret_cast<uint32_t*>(st + S::kXRegion + S::kQRegion + S::kHiRegion + S::kScRegion);
  };

  // This thread's pieces. x: piece pc (the same for all of them) of token rows r_i, values
  // [c kChunk + 8 pc, + 8) of chunk c. q: bytes [64 c + 16 jq, + 16) of rows r_i; hi: word jh of
  // the chunk's high bits; sc: word j_i of the words covering the chunk's scale records of row
  // r_i; d: the word holding row tid's super-block d.
  const int pc = tid % (kChunk / 8), jq = tid % 4, jh = tid % kHiDiv;
  uint32_t x_off[kXPer], q_off[kQPer], hi_off[kHiPer > 0 ? kHiPer : 1], sc_rowoff[kScPer];
  int x_slot[kXPer], sc_j[kScPer];
#pragma unroll
  for (int i = 0; i < kXPer; ++i) {
    const int r = (tid + kThreads * i) / (kChunk / 8);
    x_off[i] = uint32_t(min(tok0 + r, n - 1)) * uint32_t(k) + 8 * pc;
    x_slot[i] = r * S::kXRow + (pc % kSub) * 4 + pc / kSub;
  }
#pragma unroll
  for (int i = 0; i < kQPer; ++i) q_off[i] = row_of((tid + kThreads * i) / 4) * q_row + 16 * jq;
#pragma unroll
  for (int i = 0; i < kHiPer; ++i) hi_off[i] = row_of((tid + kThreads * i) / kHiDiv) * hi_row + 4 * jh;
#pragma unroll
  for (int i = 0; i < kScPer; ++i) {
    const int e = min(tid + kThreads * i, kRows * S::kScWords - 1);
    sc_rowoff[i] = row_of(e / S::kScWords) * sc_row;
    sc_j[i] = tid + kThreads * i < kRows * S::kScWords ? e % S::kScWords : S::kScWords;  // kScWords: none
  }
  const uint32_t d_rowoff = row_of(min(tid, kRows - 1)) * d_row;

  // Chunk c into stage s. The last chunk of a row may end early (k a whole number of blocks, not
  // of chunks): only its bytes within the row are staged, and the lanes whose granule lies past
  // k read none.
  auto stage = [&](int64_t c, int s) {
    uint8_t* st = stage_at(s);
    const uint32_t v = uint32_t(c) * kChunk + 8 * pc;
    const bool x_in = v < k;
#pragma unroll
    for (int i = 0; i < kXPer; ++i)
      cp_async16(&xs_of(st)[x_slot[i]], p.x + x_off[i] + (x_in ? uint32_t(c) * kChunk : 0u), x_in ? 16 : 0);
    if (64 * uint32_t(c) + 16 * jq < q_row) {
#pragma unroll
      for (int i = 0; i < kQPer; ++i)
        cp_async16(&wq_of(st)[tid + kThreads * i], wq_g + q_off[i] + 64 * uint32_t(c), 16);
    }
    if constexpr (S::kHiWords > 0) {
      if (4 * S::kHiWords * uint32_t(c) + 4 * jh < hi_row) {
#pragma unroll
        for (int i = 0; i < kHiPer; ++i)
          cp_async4(&hi_of(st)[tid + kThreads * i], hi_g + hi_off[i] + 4 * S::kHiWords * uint32_t(c));
      }
    }
    // Only the words the chunk's records within k touch: one more could lie past the plane.
    const uint32_t first = uint32_t(WF::sc_at(kG * c));
    const uint32_t end = uint32_t(WF::sc_at(min(kG * (c + 1), k / 32) - 1)) + WF::kScBytes;
#pragma unroll
    for (int i = 0; i < kScPer; ++i) {
      const uint32_t w0 = (sc_rowoff[i] + first) & ~3u, at = w0 + 4 * uint32_t(sc_j[i]);
      if (sc_j[i] < S::kScWords && at < sc_rowoff[i] + end) cp_async4(&sc_of(st)[tid + kThreads * i], sc_g + at);
    }
    if constexpr (S::kDWords > 0) {
      if (tid < kRows) cp_async4(&d_of(st)[tid], d_g + ((d_rowoff + uint32_t(WF::d_at(kG * c))) & ~3u));
    }
  };
  // Lane t's raw granule of chunk c for block row r (its plane offsets sc_ro, d_ro), from stage
  // st: the bytes WeightQuant::load would read from the planes.
  auto staged_raw = [&](uint8_t* st, int r, uint32_t sc_ro, uint32_t d_ro, const typename WF::Lane& wl, int64_t c) {
    Raw raw = WF::zero();
    if (c * kChunk + 8 * kSub * t >= k) return raw;  // past the row: dequantizes to zeros
    raw.q = wq_of(st)[r * 4 + t];
    if constexpr (WF::kHi1) raw.hi.x = hi_of(st)[r * S::kHiWords + t];
    if constexpr (WF::kHi2)
      raw.hi = make_uint2(hi_of(st)[r * S::kHiWords + 2 * t], hi_of(st)[r * S::kHiWords + 2 * t + 1]);
    const int64_t grp = wl.g0 + kG * c;
    const uint8_t* sc = reinterpret_cast<const uint8_t*>(sc_of(st) + r * S::kScWords);
    const uint32_t at = sc_ro + uint32_t(WF::sc_at(grp)) - ((sc_ro + uint32_t(WF::sc_at(kG * c))) & ~3u);
    if constexpr (WF::kK) raw.sc = *reinterpret_cast<const uint4*>(sc);
    else if constexpr (WF::kScBytes == 4) raw.sc.x = *reinterpret_cast<const uint32_t*>(sc + at);
    else raw.sc.x = *reinterpret_cast<const uint16_t*>(sc + at);
    if constexpr (S::kDWords > 0) {
      const uint8_t* d = reinterpret_cast<const uint8_t*>(d_of(st) + r);
      const uint32_t dd = d_ro + uint32_t(WF::d_at(grp));
      raw.d = *reinterpret_cast<const uint16_t*>(d + (dd - (dd & ~3u)));
    }
    return raw;
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (c_begin + s < c_end) stage(c_begin + s, s);
    cp_async_commit();
  }
  // Slab r's rows: warp_row0 + 16 r + g (A rows g) and + 8 (rows g + 8), block-relative.
  const int warp_row0 = warp * 16 * RS;
  typename WF::Lane wl[RS][2];
  uint32_t sc_ro[RS][2], d_ro[RS][2];
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t row = row_of(warp_row0 + 16 * r + 8 * h + g);
      wl[r][h] = WF::lane(static_cast<const bf16*>(p.w), row, m, k, 0, t);
      sc_ro[r][h] = row * sc_row;
      d_ro[r][h] = row * d_row;
    }
  float acc[RS][NT][4] = {};
  for (int64_t c = c_begin; c < c_end; ++c) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c is staged, and every warp is done with the stage refilled next
    if (c + kStages - 1 < c_end) stage(c + kStages - 1, int((c + kStages - 1 - c_begin) % kStages));
    cp_async_commit();
    uint8_t* st = stage_at(int((c - c_begin) % kStages));
    const uint4* xs = xs_of(st);
    uint4 da[RS][kSub], db[RS][kSub];
#pragma unroll
    for (int r = 0; r < RS; ++r) {
      const int ra = warp_row0 + 16 * r + g;
      WF::dequant(wl[r][0], staged_raw(st, ra, sc_ro[r][0], d_ro[r][0], wl[r][0], c), c, da[r]);
      WF::dequant(wl[r][1], staged_raw(st, ra + 8, sc_ro[r][1], d_ro[r][1], wl[r][1], c), c, db[r]);
    }
#pragma unroll
    for (int q = 0; q < kSub; ++q) {
      uint4 vx[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) vx[i] = xs[(8 * i + g) * S::kXRow + q * 4 + t];
#pragma unroll
      for (int i = 0; i < NT; ++i)
#pragma unroll
        for (int r = 0; r < RS; ++r) {
          mma_bf16(acc[r][i], da[r][q].x, db[r][q].x, da[r][q].y, db[r][q].y, vx[i].x, vx[i].y);
          mma_bf16(acc[r][i], da[r][q].z, db[r][q].z, da[r][q].w, db[r][q].w, vx[i].z, vx[i].w);
        }
    }
  }
  cp_async_wait<0>();
  packed_gemm_store<kGemmWarps, RS, NT>(p, acc, tok0, block_row0 + warp_row0);
}

}  // namespace
}  // namespace greta::cuda
