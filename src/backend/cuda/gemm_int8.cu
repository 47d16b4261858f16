// The int8 GEMM over packed GGUF weights for decode batches (gemm_int8.h): int8 weights (or
// nibbles widened to int8) times int8 activations on the tensor cores (mma.m16n8k32.s8), an
// int32 sum per 32-value group, scaled by the group's weight and activation scales in fp32.
//
// Why not the bf16 paths: the decode GEMV and the packed GEMM dequantize every weight to bf16
// for a bf16 mma, ~25 integer instructions an mma pair, repeated for every 16-32-token tile; by
// 32 tokens their issue rate, not DRAM, binds (docs/notes/quantized-weights.md, "Batched
// steps"). Here a 4-bit word of 8 values becomes two int8 words in 3 instructions, an mma takes
// 32 values of k, and the scale math is 2 fmas an output an mma (+1 for a min).
//
// Fragment order (PTX ISA, mma.m16n8k32 with 8-bit types), lane = 4g + t:
//   A: a0 (row g, k 4t..4t+3)  a1 (row g+8, k 4t..)  a2 (row g, k 16+4t..)  a3 (row g+8, k 16+4t..)
//   B: b0 (k 4t..4t+3, col g)  b1 (k 16+4t.., col g)
//   C: c0, c1 (row g, cols 2t, 2t+1)  c2, c3 (row g+8, cols 2t, 2t+1)
// One mma must cover exactly one 32-value group (the group's scale multiplies its int32 sum),
// and its k order is whatever the registers hold, as long as A and B agree (the GEMV's trick,
// gemv_kernel.cuh, top). So lane t takes word t of the group's 16 quant bytes (4-bit: 8 values,
// quant_planes.h order), unpacked into a0 (its low nibbles) and a2 (its high nibbles), or bytes
// [8t, 8t + 8) of a Q8_0 group (a0, a2); x's 8 values of the same positions were stored by the
// quantizer as that lane's two words (b0, b1), in the same byte order. A quad thus reads a
// group's 16 or 32 bytes, with 4- and 8-byte loads through L1 (the other half of each sector is
// the next group's).
//
// Scale math without an int-to-float conversion (a quarter-rate instruction): the mma adds its
// int32 sum s to C = 0x4B400000, the bits of 1.5 * 2^23, which makes the result's bits the
// float 1.5 * 2^23 + s exactly (|s| <= 32 * 128 * 127 < 2^22). Then f = fma(that, a, -1.5 *
// 2^23 a) = s a, with a = d_x (times 1/16 for Q4_0's shifted nibbles) and -1.5 * 2^23 a
// precomputed per token and group, rounded once: an error of about one unit of s. And acc +=
// f d_w (+ m_w sum(x) for the formats with a min).
//
// Work split: as gemm_w8a8.cu. A block has kWarps warps, each owning RS 16-row slabs, and one
// tile of 8 NT tokens; a warp walks its part of k with its weights one chunk (4 groups) ahead of
// its mmas. x's chunks (bytes, scales, sums) are staged in shared memory for the block's warps,
// kStages deep (cp.async): read from global memory right before their mmas, as a first version
// did, every x load was a dependent L2 round trip and the kernel ran at 4x its issue count.
// k is split over blocks until the GPU has a few blocks an SM; the last block of a tile adds the
// parts in part order and writes out (gemm_packed_store.cuh).
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_int8.h"
#include "backend/cuda/gemm_packed_store.cuh"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/int8_piece.cuh"
#include "backend/cuda/k_split.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

constexpr int kWarps = 4;
// Blocks an SM the register budget aims at (168 registers a thread): 2 left ~25 KB of weights in
// flight an SM, short of what hides the DRAM latency.
constexpr int kMinBlocks = 3;
// x chunks staged ahead in shared memory (the chunk in use and kStages - 1 in flight).
constexpr int kStages = 3;
constexpr uint32_t kMagicBits = 0x4B400000u;  // 1.5 * 2^23
constexpr float kMagic = 12582912.f;

// ---- x: int8 per 32 values ----

// Thread e of token `tok` quantizes values [8 e, 8 e + 8) of x's row: the 4 threads of a group
// are adjacent lanes. Tokens n..rows-1 (padding to whole token tiles) get zeros.
template <bool NIBBLES>
__global__ void __launch_bounds__(256)
    quantize_int8_acts_kernel(const bf16* __restrict__ x, int64_t n, int64_t k, Int8Acts a) {
  pdl_allow_dependents();
  pdl_wait();
  const int64_t rows = int8_acts_rows(n), per_row = k / 8;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool ok = e < rows * per_row;  // whole warps stay for the shuffles (per_row % 16 == 0)
  const int64_t tok = ok ? e / per_row : 0, p = ok ? e % per_row : 0;
  const uint4 raw = ok && tok < n ? *reinterpret_cast<const uint4*>(x + tok * k + 8 * p) : make_uint4(0, 0, 0, 0);
  const Int8Piece pc = quantize_int8_piece<NIBBLES>(raw, int(p % 4) / 2);
  if (!ok) return;
  // Group grp = 4 c + j, lane t = p % 4 of it (layout: gemm_int8.h), the pieces of a row rotated
  // by the token so that 8 tokens' reads of one (t, j) fall in distinct shared-memory banks.
  const int64_t grp = p / 4, c = grp / 4, j = grp % 4;
  const int t = int(p % 4);
  *reinterpret_cast<uint2*>(a.q + (c * rows + tok) * kInt8GemmChunk + 32 * t + 8 * ((j + tok) % 4)) = pc.q;
  if (t == 0) {
    a.d[grp * rows + tok] = pc.d;
    a.sum[grp * rows + tok] = pc.sum;
  }
}

// ---- the weight formats ----

// A lane's share of a chunk (4 groups) of one row: word t of each group's quants (Q8_0: bytes
// [8t, 8t + 8)), the groups' high-bit words (Q5_*) and scale records.
template <DType T>
struct Int8Fmt {
  static constexpr bool kBytes = T == DType::Q8_0;
  static constexpr bool kK = T == DType::Q4_K || T == DType::Q5_K;  // a 16-byte record a super-block
  static constexpr bool kHi = T == DType::Q5_0 || T == DType::Q5_1 || T == DType::Q5_K;
  static constexpr bool kMin = T == DType::Q4_1 || T == DType::Q5_1 || T == DType::Q5_0 || kK;
  static constexpr bool kDm = T == DType::Q4_1 || T == DType::Q5_1;  // (d, m) records
  static constexpr int kQ = kBytes ? 32 : 16;                        // quant bytes a group
  // Q4_0's nibbles are widened to 16 (q - 8), so its sums are 16 times the values'.
  static constexpr float kFold = T == DType::Q4_0 ? 1.f / 16.f : 1.f;

  struct Raw {
    uint32_t q[4][kBytes ? 2 : 1];
    uint4 hi;  // Q5_*: the 4 groups' high-bit words
    uint4 sc;  // 4 fp16 d (.x, .y), 4 (fp16 d, fp16 m), or the K-quants' super-block record
  };
  struct Row {
    const uint8_t* q;
    const uint8_t* hi;
    const uint8_t* sc;
  };

  __device__ static Row row(const void* w, int64_t r, int64_t m, int64_t k, int t) {
    const QuantPlanes pl = quant_planes(T, m, k);
    const uint8_t* b = static_cast<const uint8_t*>(w);
    return {b + pl.q + r * int64_t(plane_q_row(T, k)) + (kBytes ? 8 : 4) * t,
            b + pl.hi + r * int64_t(plane_hi_row(T, k)), b + pl.sc + r * int64_t(plane_sc_row(T, k))};
  }
  __device__ static void load(const Row& p, int64_t c, Raw& r) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint8_t* q = p.q + (4 * c + j) * kQ;
      if constexpr (kBytes) {
        const uint2 v = ld_u64(q);
        r.q[j][0] = v.x, r.q[j][1] = v.y;
      } else {
        r.q[j][0] = ld_u32(q);
      }
    }
    if constexpr (kHi) r.hi = ld_cached(p.hi + 16 * c);
    if constexpr (kDm) {
      r.sc = ld_cached(p.sc + 16 * c);
    } else if constexpr (kK) {  // chunks 2s and 2s + 1 share super-block s's record
      r.sc = ld_cached(p.sc + 16 * (c / 2));
    } else {
      const uint2 v = ld_u64(p.sc + 8 * c);
      r.sc = make_uint4(v.x, v.y, 0, 0);
    }
  }
  // Group j's A words for lane t: lo (a0 / a1) and hi (a2 / a3).
  __device__ static void unpack(const Raw& r, int j, int t, uint32_t& lo, uint32_t& hi) {
    if constexpr (kBytes) {
      lo = r.q[j][0], hi = r.q[j][1];
    } else if constexpr (T == DType::Q4_0) {
      // The nibble in the top half of each byte, its top bit flipped: as int8, 16 (q - 8).
      lo = ((r.q[j][0] << 4) ^ 0x80808080u) & 0xF0F0F0F0u;
      hi = (r.q[j][0] ^ 0x80808080u) & 0xF0F0F0F0u;
    } else {
      constexpr uint32_t kLow = 0x0F0F0F0Fu;
      lo = r.q[j][0] & kLow;
      hi = (r.q[j][0] >> 4) & kLow;
      if constexpr (kHi) {  // the 5th bits of word t's values (quant_planes.h), as gemv_dot.cuh
        const uint32_t hw = j == 0 ? r.hi.x : j == 1 ? r.hi.y : j == 2 ? r.hi.z : r.hi.w;
        const uint32_t h = hw >> (4 * t);
        lo |= ((h << 4) & 0x00100010u) | ((h << 10) & 0x10001000u);
        hi |= ((h << 3) & 0x00100010u) | ((h << 9) & 0x10001000u);
      }
    }
  }
  // Group j's scale d and min m (value = d q + m) in chunk c.
  __device__ static void scale(const Raw& r, int64_t c, int j, float& d, float& m) {
    if constexpr (kK) {
      // Sub-block 4 (c % 2) + j of the super-block: its 6-bit scale and min (core/quant_blocks.h
      // q4k_scale_min, as WeightQuant::scale_min).
      const uint32_t a = (r.sc.y >> (8 * j)) & 0xffu, b = (r.sc.z >> (8 * j)) & 0xffu, e = (r.sc.w >> (8 * j)) & 0xffu;
      const bool upper = c % 2 == 1;
      const uint32_t sc = upper ? (e & 15u) | ((a >> 6) << 4) : a & 63u;
      const uint32_t mn = upper ? (e >> 4) | ((b >> 6) << 4) : b & 63u;
      d = half_bits(r.sc.x & 0xffffu) * float(sc);
      m = -half_bits(r.sc.x >> 16) * float(mn);
    } else if constexpr (kDm) {
      const uint32_t rec = j == 0 ? r.sc.x : j == 1 ? r.sc.y : j == 2 ? r.sc.z : r.sc.w;
      d = half_bits(rec & 0xffffu);
      m = half_bits(rec >> 16);
    } else {
      const uint32_t pair = j < 2 ? r.sc.x : r.sc.y;
      d = half_bits(j % 2 == 0 ? pair & 0xffffu : pair >> 16);
      m = T == DType::Q5_0 ? -16.f * d : 0.f;
    }
  }
};

// ---- the GEMM ----

template <DType T, int NT, int RS>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks) int8_gemm_kernel(Int8GemmArgs p) {
  using F = Int8Fmt<T>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t m = p.m, k = p.k;
  const int tok0 = int(blockIdx.x) * 8 * NT;
  const int part = int(blockIdx.z);
  const int64_t row0 = (int64_t(blockIdx.y) * kWarps + warp) * 16 * RS;  // this warp's first row
  const int64_t c_begin = int64_t(part) * p.chunks_per_split;
  const int64_t c_end = min(k / kInt8GemmChunk, c_begin + p.chunks_per_split);
  // Slab r: rows row0 + 16 r + g (A rows g) and + 8. Rows past m read row m - 1 and tokens past
  // n read token n - 1 (valid memory); their results are dropped at the store.
  typename F::Row wr[RS][2];
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) wr[r][h] = F::row(p.w, min(row0 + 16 * r + 8 * h + g, m - 1), m, k, t);
  // x's chunk c for the block's tokens, staged in shared memory (cp.async, kStages deep): the
  // bytes of token tok0 + r at xs[.][r] (128 bytes, the global row as is: lane t's group-j piece
  // at 32 t + 8 ((j + r) % 4)), and per group j the scales and sums of the tokens at ds[.][j] /
  // ss[.][j].
  constexpr int kTokens = 8 * NT;
  __shared__ __align__(16) uint8_t xs[kStages][kTokens][kInt8GemmChunk];
  __shared__ __align__(16) float ds[kStages][4][kTokens];
  __shared__ __align__(16) float ss[kStages][F::kMin ? 4 : 1][kTokens];
  const int64_t rows = p.rows;
  auto stage = [&](int64_t c, int st) {
    constexpr int kXPieces = kTokens * kInt8GemmChunk / 16, kDPieces = 4 * kTokens / 4;
    constexpr int kPieces = kXPieces + (F::kMin ? 2 : 1) * kDPieces;
    for (int e = threadIdx.x; e < kPieces; e += kWarps * 32) {
      if (e < kXPieces) {
        cp_async16(&xs[st][0][0] + 16 * e, p.x.q + (c * rows + tok0) * kInt8GemmChunk + 16 * e, 16);
      } else {
        const int f = (e - kXPieces) % kDPieces, j = f / (kTokens / 4), r = 4 * (f % (kTokens / 4));
        const bool sum = e - kXPieces >= kDPieces;
        const float* src = (sum ? p.x.sum : p.x.d) + (4 * c + j) * rows + tok0 + r;
        cp_async16(sum ? &ss[st][j][r] : &ds[st][j][r], src, 16);
      }
    }
  };
  float acc[RS][NT][4] = {};
  // Group by group: a group's A words and scales, then its mmas for every token tile (holding a
  // whole chunk's unpacked words and scales took every register, with spills).
  auto mma_chunk = [&](int64_t c, int st, const typename F::Raw(&w)[RS][2]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t lo[RS][2], hi[RS][2];
      float dw[RS][2], mw[RS][2];
#pragma unroll
      for (int r = 0; r < RS; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          F::unpack(w[r][h], j, t, lo[r][h], hi[r][h]);
          F::scale(w[r][h], c, j, dw[r][h], mw[r][h]);
        }
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        const uint2 xw = *reinterpret_cast<const uint2*>(&xs[st][8 * i + g][32 * t + 8 * ((j + g) & 3)]);
        const float2 dx = *reinterpret_cast<const float2*>(&ds[st][j][8 * i + 2 * t]);
        float2 sx;
        if constexpr (F::kMin) sx = *reinterpret_cast<const float2*>(&ss[st][j][8 * i + 2 * t]);
        float a[2], b[2], s[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          a[e] = (e == 0 ? dx.x : dx.y) * F::kFold;
          b[e] = -kMagic * a[e];
          if constexpr (F::kMin) s[e] = e == 0 ? sx.x : sx.y;
        }
#pragma unroll
        for (int r = 0; r < RS; ++r) {
          uint32_t d[4];
          mma_s8(d, lo[r][0], lo[r][1], hi[r][0], hi[r][1], xw.x, xw.y, kMagicBits);
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int h = q >> 1, e = q & 1;
            const float f = fmaf(__uint_as_float(d[q]), a[e], b[e]);
            acc[r][i][q] = fmaf(f, dw[r][h], acc[r][i][q]);
            if constexpr (F::kMin) acc[r][i][q] = fmaf(mw[r][h], s[e], acc[r][i][q]);
          }
        }
      }
    }
  };

  // PDL (pdl.cuh): the first weights never depend on the previous kernel, so they are requested
  // before waiting for it; x, out and the split scratch only after.
  pdl_allow_dependents();
  typename F::Raw cur[RS][2];
  if (c_begin < c_end) {
#pragma unroll
    for (int r = 0; r < RS; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) F::load(wr[r][h], c_begin, cur[r][h]);
  }
  pdl_wait();
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (c_begin + st < c_end) stage(c_begin + st, st);
    cp_async_commit();
  }
  // Rolled: unrolled, the compiler keeps several iterations' loads live.
#pragma unroll 1
  for (int64_t c = c_begin; c < c_end; ++c) {
    typename F::Raw nxt[RS][2];
    const bool more = c + 1 < c_end;
    if (more) {  // in flight while this chunk's mmas run
#pragma unroll
      for (int r = 0; r < RS; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) F::load(wr[r][h], c + 1, nxt[r][h]);
    }
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c is staged, and every warp is done with the stage refilled next
    if (c + kStages - 1 < c_end) stage(c + kStages - 1, int((c + kStages - 1 - c_begin) % kStages));
    cp_async_commit();
    mma_chunk(c, int((c - c_begin) % kStages), cur);
    if (more) {
#pragma unroll
      for (int r = 0; r < RS; ++r) cur[r][0] = nxt[r][0], cur[r][1] = nxt[r][1];
    }
  }
  cp_async_wait<0>();
  packed_gemm_store<kWarps, RS, NT>(p, acc, tok0, row0);
}

template <DType T>
struct LaunchInt8 {
  static void run(const Int8GemmArgs& a, const Int8GemmPlan& plan, cudaStream_t s) {
    const dim3 grid(unsigned(plan.token_tiles), unsigned(plan.row_tiles), unsigned(plan.splits));
    const auto go = [&](auto kernel) { launch_pdl(kernel, grid, dim3(kWarps * 32), 0, s, a); };
    if constexpr (int8_gemm_format(T)) {
      if (plan.tile_tokens == 16) plan.slabs == 1 ? go(int8_gemm_kernel<T, 2, 1>) : go(int8_gemm_kernel<T, 2, 2>);
      else if (plan.tile_tokens == 32) plan.slabs == 1 ? go(int8_gemm_kernel<T, 4, 1>) : go(int8_gemm_kernel<T, 4, 2>);
      else go(int8_gemm_kernel<T, 8, 1>);
    } else {
      throw Error(std::string("cuda int8 gemm: ") + std::string(dtype_name(T)) + " is not a format it reads");
    }
  }
};

int64_t tile_rows(const Int8GemmPlan& p) { return 16 * kWarps * p.slabs; }

}  // namespace

size_t int8_acts_bytes(int64_t n, int64_t k) {
  // The bytes, then d and the sums, each 256-byte aligned.
  const auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  const int64_t rows = int8_acts_rows(n);
  return align(size_t(rows * k)) + 2 * align(size_t(rows * (k / 32)) * sizeof(float));
}

Int8Acts int8_acts_at(void* base, int64_t n, int64_t k) {
  const auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  const int64_t rows = int8_acts_rows(n);
  uint8_t* b = static_cast<uint8_t*>(base);
  const size_t q = align(size_t(rows * k)), d = align(size_t(rows * (k / 32)) * sizeof(float));
  return {b, reinterpret_cast<float*>(b + q), reinterpret_cast<float*>(b + q + d)};
}

void quantize_int8_acts(DType t, const bf16* x, int64_t n, int64_t k, Int8Acts a, cudaStream_t s) {
  if (n <= 0) return;
  if (k % kInt8GemmChunk != 0)
    throw Error("cuda int8 activations: k " + std::to_string(k) + " is not a multiple of 128");
  const int64_t threads = int8_acts_rows(n) * (k / 8);
  const dim3 grid(unsigned((threads + 255) / 256));
  if (byte_quants(t)) launch_pdl(quantize_int8_acts_kernel<false>, grid, dim3(256), 0, s, x, n, k, a);
  else launch_pdl(quantize_int8_acts_kernel<true>, grid, dim3(256), 0, s, x, n, k, a);
}

Int8GemmPlan int8_gemm_plan(int64_t n, int64_t m, int64_t k, int n_sms, Int8GemmTuning tune) {
  Int8GemmPlan p;
  p.tile_tokens = n <= 16 ? 16 : n <= 32 ? 32 : 64;
  // A 64-token tile takes one slab a warp: its x operands and accumulators leave no room for the
  // second slab's weights in flight.
  p.slabs = p.tile_tokens == 64 ? 1 : tune.slabs == 1 ? 1 : 2;
  p.token_tiles = (n + p.tile_tokens - 1) / p.tile_tokens;
  p.row_tiles = (m + tile_rows(p) - 1) / tile_rows(p);
  const KSplit ks = split_k(k / kInt8GemmChunk, p.row_tiles * p.token_tiles,
                            int64_t(tune.blocks_per_sm) * std::max(n_sms, 1), tune.min_chunks);
  p.chunks_per_split = ks.chunks_per_split;
  p.splits = ks.splits;
  return p;
}

size_t int8_gemm_scratch_floats(const Int8GemmPlan& p) { return tiled_gemm_scratch_floats(p, kWarps); }

size_t int8_gemm_counters(const Int8GemmPlan& p) { return tiled_gemm_counters(p); }

void int8_gemm(DType t, Int8GemmArgs a, Int8GemmPlan plan, cudaStream_t s) {
  if (a.n <= 0 || a.m <= 0) return;
  if (!int8_gemm_takes(t, a.k) || a.n > plan.token_tiles * plan.tile_tokens ||
      plan.row_tiles != (a.m + tile_rows(plan) - 1) / tile_rows(plan) ||
      (plan.slabs != 1 && (plan.slabs != 2 || plan.tile_tokens == 64)))
    throw Error("cuda int8 gemm: a plan made for another shape or format");
  a.chunks_per_split = plan.chunks_per_split;
  a.rows = int32_t(int8_acts_rows(a.n));
  on_packed_format<LaunchInt8>(t, a, plan, s);
}

}  // namespace greta::cuda
