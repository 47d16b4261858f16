// The decode GEMV kernel and its launchers: out [n, m] = x [n, k] @ w [m, k]^T for n <= 32
// tokens, bf16 in, fp32 accumulate. Included by gemv.cu (the production entry points) and by
// the GEMV benchmark (bench/gemv_variants.cuh, which instantiates the measured variants);
// everything here is internal to the file that includes it.
//
// Why tensor cores for a bandwidth-bound op: at n = 8 a CUDA-core version needs 8 FMAs plus
// 8 bf16->f32 conversions per weight element, which at 3 TB/s (1.5 G elements/us) is close to
// the H100's FP32 issue rate; one mma.m16n8k16 does 16 rows x 8 tokens x 16 k in one
// instruction, so the math disappears and only the memory stream is left.
//
// Layout trick: a dot product does not care in which order k is summed, so each lane loads
// 16 contiguous bytes (8 values) of a weight row and of an x row, and we *define* the mma's
// logical k order to match those registers instead of shuffling data into the documented
// fragment order. For m16n8k16 (row.col) lane L = 4g + t holds
//   A: a0 = (row g,   k 2t..2t+1)  a1 = (row g+8, k 2t..2t+1)
//      a2 = (row g,   k 2t+8..9)   a3 = (row g+8, k 2t+8..9)
//   B: b0 = (k 2t..2t+1, col g)    b1 = (k 2t+8..9, col g)
//   C: c0,c1 = (row g, cols 2t, 2t+1)   c2,c3 = (row g+8, cols 2t, 2t+1)
// With W0 = w[row g][8t .. 8t+8) as four bf16x2 words and X = x[token g][8t .. 8t+8), mma #1
// takes (W0.x, W8.x, W0.y, W8.y) x (X.x, X.y) and mma #2 the .z/.w words: A and B see the same
// actual k for every logical k, and the 4 lanes t = 0..3 cover a 32-wide k chunk exactly once.
//
// Work split: a block owns 16 rows; its 8 warps interleave over the 32-wide k chunks (so at
// any moment the block streams 8 adjacent chunks = 512 contiguous bytes of each row) and
// reduce through shared memory at the end. Each lane keeps UNROLL chunks x 2 rows of 16-byte
// loads in flight; weights are read with ld.global.nc.L1::no_allocate (streamed once, never
// reused) so L1 keeps x, which every warp re-reads.
#pragma once
#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemv_dot.cuh"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerBlock = 16;

// x [n, k], w [m, k], bias [m] or null, out [n, m]; n <= 8 * NT (NT below), k % 8 == 0, rows 16-byte aligned.
// LAUNCH (kLaunch* below): kLaunchPdl and kLaunchPipe are launched with programmatic dependent
// launch (PDL): the kernel lets its own successor launch early and waits for the previous grid
// (griddepcontrol.wait) before touching x or out, so its blocks are resident and parked when
// the previous kernel ends. kLaunchPipe also software-pipelines the weight stream: each
// iteration issues the next iteration's weight loads before its own mmas (twice the bytes in
// flight per lane), and the first iteration's weights -- which never depend on the previous
// kernel -- are loaded into registers *before* the wait, so the DRAM latency of a kernel's
// first loads overlaps the previous kernel's tail. (Prefetching to L2 instead lost: the
// prefetched lines competed with the running grid and were partly evicted; docs/notes/gemv.md, "Getting bytes in flight
// earlier".)
//
// Fusions (GemvArgs, cuda_ops.h), each a compile-time switch so the plain kernel pays nothing:
// - NORM = kNormPre: the GEMV computes rms_norm(x0) * norm_w @ W^T with the norm's work done by
//   the GEMV that produced x0 (EPI_ADD with p.next_h): x here is already x0 * norm_w (p.next_h of
//   that launch), rounded to bf16, and
//   p.norm_ss holds its per-16-row-tile sums of squares of x, which this kernel adds up (in a
//   fixed order) while its weights stream, so its loop is the plain one.
// - EPI_ADD with p.next_h (the producer side of kNormPre): besides out += result, writes
//   next_h = out * next_norm_w (bf16) and, per token, the sum of squares of its 16 new out
//   values to next_ss[tile][token] -- plain stores summed later in a fixed order, no atomics,
//   so results do not depend on block timing.
// - EPI_ADD: out += result (the residual add after the o and down projections).
// - EPI_DUAL (SwiGLU): out = silu(x @ Wg^T) * (x @ Wu^T) with Wg = seg0.w, Wu = seg1.w. A block
//   owns 8 output rows: the mma's A rows g are gate rows and rows g + 8 the up rows of the same
//   outputs, so each lane ends up holding both halves of its outputs (c0/c1 gate, c2/c3 up) and
//   the gate activations never go to memory. One launch instead of gate, up and silu_mul.
//   Both epilogues round the GEMV results to bf16 first, as the separate kernels would see them.
// - Segments: up to 3 matrices sharing x in one launch (q, k, v): blocks [0, blk1) do seg0,
//   [blk1, blk2) seg1, the rest seg2. Pointers are picked with selects on kernel parameters,
//   never by a run-time array index (which makes ptxas copy the parameters to local memory).
// - EPI_ROPE: q, k, v in one launch (seg0, seg1, seg2) with RoPE and the KV-cache write in the
//   epilogue. In the q and k segments a block owns 8 rotation pairs of one head: A rows g are
//   the pairs' first rows and rows g + 8 their partners (i + hd/2 for NeoX pairing, 2i + 1 for
//   adjacent pairs), so, as with EPI_DUAL, each lane holds both halves of its pairs and rotates
//   them in registers. The v segment is stored as usual and copied to the cache.
enum : int { kEpiStore = 0, kEpiAdd = 1, kEpiDual = 2, kEpiRope = 3 };
enum : int { kNormNone = 0, kNormPre = 2 };  // NORM (below)
enum : int { kLaunchPlain = 0, kLaunchPdl = 1, kLaunchPipe = 2 };

// A lane's weights of chunks c, c + WARPS, ... (UNROLL of them) in rows a and b.
template <int UNROLL, int WARPS, class WF>
__device__ __forceinline__ void load_chunks(const typename WF::Lane& wa, const typename WF::Lane& wb, int64_t c,
                                            typename WF::Raw (&ra)[UNROLL], typename WF::Raw (&rb)[UNROLL]) {
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    ra[u] = WF::load(wa, c + int64_t(u) * WARPS);
    rb[u] = WF::load(wb, c + int64_t(u) * WARPS);
  }
}

// NT: token tiles of 8 (n <= 8 * NT). Each weight granule a lane loads feeds NT mma pairs, one
// per tile, so up to 32 tokens still cost one pass over the weights; x is re-read per tile
// from L1/L2. With NT = 1 two accumulator sets (even/odd u) halve the dependent mma chain;
// with NT > 1 the tiles' accumulators already interleave.
// SPLIT > 1 (split-K, for shapes with too few row tiles to fill the GPU): SPLIT blocks share a
// row tile, each summing one contiguous part of k; the partial sums meet in p.split_scratch and
// the last block of the tile to arrive (p.split_count) adds them and runs the epilogue.
// WF (gemv_weights.cuh): how a lane reads its weights; with WF::kSub > 1 a chunk is 32 * kSub
// values wide and each lane's granule feeds kSub mma pairs.
template <int UNROLL, int LAUNCH, int WARPS = kWarps, int NORM = kNormNone, int EPI = kEpiStore, int NT = 1,
          int SPLIT = 1, class WF = WeightBf16>
__global__ void __launch_bounds__(WARPS * 32) gemv_mma_kernel(const GemvArgs p, float eps) {
  static_assert(SPLIT == 1 || (NORM == kNormNone && (EPI == kEpiStore || EPI == kEpiAdd)),
                "split-K: plain and add epilogues");
  constexpr int kSets = NT == 1 ? 2 : 1;
  constexpr int kSub = WF::kSub, kChunk = 32 * kSub;  // values a lane, a chunk (4 lanes) takes
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int n = p.n;
  const int64_t k = p.k;                                            // row length of w and x
  const int64_t bid = SPLIT > 1 ? blockIdx.x / SPLIT : blockIdx.x;  // row tile
  const int part = SPLIT > 1 ? int(blockIdx.x % SPLIT) : 0;
  // This block's part of k: [kb0, kb0 + kl), whole chunks except at the very end.
  const int64_t per = ((k + kChunk - 1) / kChunk + SPLIT - 1) / SPLIT * kChunk;
  const int64_t kb0 = SPLIT > 1 ? min(k, part * per) : 0;
  const int64_t kl = SPLIT > 1 ? min(k, kb0 + per) - kb0 : k;
  const bool s1 = bid >= p.blk1, s2 = bid >= p.blk2;
  const bf16* __restrict__ w = s2 ? p.seg2.w : s1 ? p.seg1.w : p.seg0.w;
  const float* __restrict__ bias = s2 ? p.seg2.bias : s1 ? p.seg1.bias : p.seg0.bias;
  bf16* __restrict__ out = s2 ? p.seg2.out : s1 ? p.seg1.out : p.seg0.out;
  const int64_t m = s2 ? p.seg2.m : s1 ? p.seg1.m : p.seg0.m;
  constexpr int kOutRows = EPI == kEpiDual ? 8 : kRowsPerBlock;  // outputs per block
  const int64_t row0 = (bid - (s2 ? p.blk2 : s1 ? p.blk1 : 0)) * kOutRows;
  // Rows past m load row m-1 (valid memory) and their results are dropped at the store.
  int64_t ra = min(row0 + g, m - 1), rb = EPI == kEpiDual ? ra : min(row0 + g + 8, m - 1);
  // EPI_ROPE, q/k segment: this block's 8 pairs are pair0 .. pair0 + 7 of head `head`.
  const int hd = p.rope.head_dim;
  const bool rope_rows = EPI == kEpiRope && !s2;
  int64_t head = 0;
  int pair0 = 0;
  if (rope_rows) {
    const int64_t bseg = bid - (s1 ? p.blk1 : 0);
    head = bseg / (hd / 16);
    pair0 = int(bseg % (hd / 16)) * 8;
    ra = head * hd + (p.rope.neox ? pair0 + g : 2 * (pair0 + g));
    rb = ra + (p.rope.neox ? hd / 2 : 1);
  }
  const typename WF::Lane wa = WF::lane(w, ra, m, k, kb0, t);
  const typename WF::Lane wb = WF::lane(EPI == kEpiDual ? p.seg1.w : w, rb, m, k, kb0, t);
  // Lanes whose token 8i + g >= n load a real row anyway: B column g only feeds output column
  // g of tile i, which is dropped at the store, so the main loop needs no masks.
  const bf16* xr[NT];
#pragma unroll
  for (int i = 0; i < NT; ++i) xr[i] = p.x + int64_t(min(8 * i + g, n - 1)) * k + kb0 + 8 * kSub * t;
  // EPI_ROPE: the cos/sin of the one epilogue pair this thread will rotate (thread e handles
  // item e < 64 * NT), computed before waiting for the previous kernel: positions and
  // frequencies are uploaded before the step starts, so the sincos (in double, of the fp32
  // angle, exactly as the rope_kv kernel and the CPU reference compute it) overlaps
  // the previous kernel's tail instead of lengthening this one's epilogue.
  static_assert(64 * NT <= WARPS * 32, "one RoPE epilogue item per thread");
  float rope_c = 1.f, rope_s = 0.f;
  if (rope_rows) {
    const int e = threadIdx.x, l = e % 32;
    const int tok = 8 * (e / 64) + 2 * (l % 4) + (e / 32) % 2;
    if (e < 64 * NT && tok < n) {
      double sd, cd;
      sincos(double(float(p.rope.positions[tok]) * p.rope.inv_freq[pair0 + l / 4]), &sd, &cd);
      rope_c = float(cd);
      rope_s = float(sd);
    }
  }
  const int64_t full = kl / kChunk;  // whole chunks
  int64_t c0 = warp;
  if constexpr (LAUNCH != kLaunchPlain) asm volatile("griddepcontrol.launch_dependents;");
  typename WF::Raw pa[UNROLL], pb[UNROLL];  // kLaunchPipe: this lane's weights for the iteration about to run
  if constexpr (LAUNCH == kLaunchPipe) {
    if (c0 + int64_t(UNROLL - 1) * WARPS < full) load_chunks<UNROLL, WARPS, WF>(wa, wb, c0, pa, pb);
  }
  if constexpr (LAUNCH != kLaunchPlain) asm volatile("griddepcontrol.wait;" ::: "memory");
  float acc[NT][kSets][4] = {};
  float ss[NT] = {};  // NORM: this lane's share of sum(x[8i + g]^2)
  if constexpr (NORM == kNormPre) {
    // The producer's per-tile sums for token 8i + g: lane (warp, t) takes tiles warp * 4 + t,
    // + 4 * WARPS, ...; the reduction below adds the lanes t, then the warps.
    const int64_t tiles = k / 16;
    for (int64_t tl = warp * 4 + t; tl < tiles; tl += WARPS * 4) {
#pragma unroll
      for (int i = 0; i < NT; ++i) ss[i] += __ldcg(p.norm_ss + tl * kGemvMaxTokens + 8 * i + g);
    }
  }
  // kLaunchPipe main loop: the next iteration's weight loads go out before this iteration's x
  // loads and mmas, so 2 x UNROLL chunks per lane are in flight while the mmas wait. Its x/mma
  // half repeats the loop below on purpose: sharing it through a lambda or helper changed
  // ptxas's choices for the unpipelined kernels (64 -> 80-138 registers, measured), and those
  // stay the measured baseline.
  if constexpr (WF::kDot) {
    // One token, int8 activations (gemv_dot.cuh): x quantized into shared memory, integer dot
    // products of the pipelined weight stream; the sums end where the mma path leaves token 0
    // (c0: row g, c2: row g + 8 of the lanes t = 0), so the reduction and epilogues below are
    // shared.
    static_assert(NT == 1 && LAUNCH == kLaunchPipe, "int8 dot products: one token, pipelined");
    extern __shared__ __align__(16) uint8_t dot_x[];
    WF::quantize_x(p.x, k, kb0, kb0 + kl, dot_x);  // only this block's part of k (split-K)
    __syncthreads();
    float sa = 0.f, sb = 0.f;
    for (; c0 + int64_t(UNROLL - 1) * WARPS < full; c0 += int64_t(WARPS) * UNROLL) {
      const int64_t cn = c0 + int64_t(WARPS) * UNROLL;
      const bool more = cn + int64_t(UNROLL - 1) * WARPS < full;
      typename WF::Raw na[UNROLL], nb[UNROLL];
      if (more) load_chunks<UNROLL, WARPS, WF>(wa, wb, cn, na, nb);
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int64_t c = c0 + int64_t(u) * WARPS, v = kb0 + kChunk * c + 8 * kSub * t;
        sa += WF::dot(wa, pa[u], c, dot_x, k, v);
        sb += WF::dot(wb, pb[u], c, dot_x, k, v);
      }
      if (more) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) pa[u] = na[u], pb[u] = nb[u];
      }
    }
    // The remaining chunks one at a time; a lane's granule in the last one is whole or absent.
    for (; c0 < (kl + kChunk - 1) / kChunk; c0 += WARPS) {
      const int64_t v = kb0 + kChunk * c0 + 8 * kSub * t;
      if (v < kb0 + kl) {
        sa += WF::dot(wa, WF::load(wa, c0), c0, dot_x, k, v);
        sb += WF::dot(wb, WF::load(wb, c0), c0, dot_x, k, v);
      }
    }
    sa += __shfl_xor_sync(0xffffffffu, sa, 1);
    sa += __shfl_xor_sync(0xffffffffu, sa, 2);
    sb += __shfl_xor_sync(0xffffffffu, sb, 1);
    sb += __shfl_xor_sync(0xffffffffu, sb, 2);
    acc[0][0][0] = t == 0 ? sa : 0.f;
    acc[0][0][2] = t == 0 ? sb : 0.f;
  } else if constexpr (LAUNCH == kLaunchPipe) {
    for (; c0 + int64_t(UNROLL - 1) * WARPS < full; c0 += int64_t(WARPS) * UNROLL) {
      const int64_t cn = c0 + int64_t(WARPS) * UNROLL;
      const bool more = cn + int64_t(UNROLL - 1) * WARPS < full;
      typename WF::Raw na[UNROLL], nb[UNROLL];
      uint4 vx[UNROLL][NT][kSub];
      if (more) load_chunks<UNROLL, WARPS, WF>(wa, wb, cn, na, nb);
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int64_t off = kChunk * (c0 + int64_t(u) * WARPS);
#pragma unroll
        for (int i = 0; i < NT; ++i) {
#pragma unroll
          for (int q = 0; q < kSub; ++q) vx[u][i][q] = ld_cached(xr[i] + off + 8 * q);
        }
      }
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        uint4 da[kSub], db[kSub];
        WF::dequant(wa, pa[u], c0 + int64_t(u) * WARPS, da);
        WF::dequant(wb, pb[u], c0 + int64_t(u) * WARPS, db);
#pragma unroll
        for (int q = 0; q < kSub; ++q) {
#pragma unroll
          for (int i = 0; i < NT; ++i) {
            float(&c)[4] = acc[i][kSets == 2 ? (u * kSub + q) % 2 : 0];
            mma_bf16(c, da[q].x, db[q].x, da[q].y, db[q].y, vx[u][i][q].x, vx[u][i][q].y);
            mma_bf16(c, da[q].z, db[q].z, da[q].w, db[q].w, vx[u][i][q].z, vx[u][i][q].w);
          }
        }
      }
      if (more) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) pa[u] = na[u], pb[u] = nb[u];
      }
    }
  }
  // Main loop over whole 32-wide chunks, UNROLL chunks per lane in flight, no bounds checks.
  for (; LAUNCH != kLaunchPipe && !WF::kDot && c0 + int64_t(UNROLL - 1) * WARPS < full; c0 += int64_t(WARPS) * UNROLL) {
    typename WF::Raw va[UNROLL], vb[UNROLL];
    uint4 vx[UNROLL][NT][kSub];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t off = kChunk * (c0 + int64_t(u) * WARPS);
      va[u] = WF::load(wa, c0 + int64_t(u) * WARPS);
      vb[u] = WF::load(wb, c0 + int64_t(u) * WARPS);
#pragma unroll
      for (int i = 0; i < NT; ++i) {
#pragma unroll
        for (int q = 0; q < kSub; ++q) vx[u][i][q] = ld_cached(xr[i] + off + 8 * q);
      }
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      uint4 da[kSub], db[kSub];
      WF::dequant(wa, va[u], c0 + int64_t(u) * WARPS, da);
      WF::dequant(wb, vb[u], c0 + int64_t(u) * WARPS, db);
#pragma unroll
      for (int q = 0; q < kSub; ++q) {
#pragma unroll
        for (int i = 0; i < NT; ++i) {
          float(&c)[4] = acc[i][kSets == 2 ? (u * kSub + q) % 2 : 0];
          mma_bf16(c, da[q].x, db[q].x, da[q].y, db[q].y, vx[u][i][q].x, vx[u][i][q].y);
          mma_bf16(c, da[q].z, db[q].z, da[q].w, db[q].w, vx[u][i][q].z, vx[u][i][q].w);
        }
      }
    }
  }
  // Tail: the remaining chunks one at a time; the last may be partial (k % kChunk != 0). A
  // lane's granule at kChunk c + 8 kSub t is whole or absent (k % (8 kSub) == 0, checked by the
  // caller); absent ones count as 0 (a zero raw granule dequantizes to zeros).
  const int64_t n_chunks = (kl + kChunk - 1) / kChunk;
  for (; !WF::kDot && c0 < n_chunks; c0 += WARPS) {
    const int64_t off = kChunk * c0;
    const bool ok = off + 8 * kSub * t < kl;
    const uint4 z = make_uint4(0, 0, 0, 0);
    const typename WF::Raw ra_ = ok ? WF::load(wa, c0) : WF::zero();
    const typename WF::Raw rb_ = ok ? WF::load(wb, c0) : WF::zero();
    uint4 da[kSub], db[kSub];
    WF::dequant(wa, ra_, c0, da);
    WF::dequant(wb, rb_, c0, db);
#pragma unroll
    for (int q = 0; q < kSub; ++q) {
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        const uint4 vx = ok ? ld_cached(xr[i] + off + 8 * q) : z;
        mma_bf16(acc[i][0], da[q].x, db[q].x, da[q].y, db[q].y, vx.x, vx.y);
        mma_bf16(acc[i][0], da[q].z, db[q].z, da[q].w, db[q].w, vx.z, vx.w);
      }
    }
  }
  // Cross-warp reduction through shared memory: red[warp][tile][j][lane].
  __shared__ float red[WARPS][NT][4][32];
  __shared__ float red_ss[WARPS][8 * NT];  // NORM: [warp][token] partial sums of squares
#pragma unroll
  for (int i = 0; i < NT; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) red[warp][i][j][lane] = kSets == 2 ? acc[i][0][j] + acc[i][kSets - 1][j] : acc[i][0][j];
    if constexpr (NORM != kNormNone) {
      float q = ss[i];
      q += __shfl_xor_sync(0xffffffffu, q, 1);  // the 4 lanes of token 8i + g
      q += __shfl_xor_sync(0xffffffffu, q, 2);
      if (t == 0) red_ss[warp][8 * i + g] = q;
    }
  }
  __syncthreads();
  // 1/rms of token tok (NORM): the block's lanes of that token saw all of x[tok] once.
  auto inv_rms = [&](int tok) {
    float sq = 0.f;
#pragma unroll
    for (int v = 0; v < WARPS; ++v) sq += red_ss[v][tok];
    return rsqrtf(sq / float(k) + eps);
  };
  if (rope_rows) {  // EPI_ROPE, q or k: pair sums in red[.][i][j] (first) and red[.][i][j + 2] (partner)
    for (int e = threadIdx.x; e < 64 * NT; e += WARPS * 32) {
      const int i = e / 64, j = (e / 32) % 2, l = e % 32;
      float sa = 0.f, sb = 0.f;
#pragma unroll
      for (int v = 0; v < WARPS; ++v) sa += red[v][i][j][l], sb += red[v][i][j + 2][l];
      const int tok = 8 * i + 2 * (l % 4) + j;
      const int pr = pair0 + l / 4;
      const int64_t row_a = head * hd + (p.rope.neox ? pr : 2 * pr), row_b = row_a + (p.rope.neox ? hd / 2 : 1);
      if (tok < n) {
        if constexpr (NORM != kNormNone) {
          const float r = inv_rms(tok);
          sa *= r, sb *= r;
        }
        if (bias) sa += bias[row_a], sb += bias[row_b];
        // Rounded to bf16 first: the unfused path rotates the stored bf16 GEMV output.
        float a = __bfloat162float(__float2bfloat16_rn(sa)), b = __bfloat162float(__float2bfloat16_rn(sb));
        const float ra = a * rope_c - b * rope_s, rb = a * rope_s + b * rope_c;  // rope_c/s: pair pr, token tok
        a = ra;
        b = rb;
        const bf16 qa = __float2bfloat16_rn(a), qb = __float2bfloat16_rn(b);
        out[int64_t(tok) * m + row_a] = qa;
        out[int64_t(tok) * m + row_b] = qb;
        if (s1) {  // k: also to the cache, whose rows are m = n_kv * hd wide
          bf16* dst = p.rope.k_cache + int64_t(p.rope.slots[tok]) * m;
          dst[row_a] = qa;
          dst[row_b] = qb;
        }
      }
    }
  } else if constexpr (EPI == kEpiDual) {
    // Per tile, j = 0, 1: gate sums in red[.][i][j], up sums of the same outputs in red[.][i][j + 2].
    for (int e = threadIdx.x; e < 64 * NT; e += WARPS * 32) {
      const int i = e / 64, j = (e / 32) % 2, l = e % 32;
      float sg = 0.f, su = 0.f;
#pragma unroll
      for (int v = 0; v < WARPS; ++v) sg += red[v][i][j][l], su += red[v][i][j + 2][l];
      const int64_t row = row0 + l / 4;
      const int tok = 8 * i + 2 * (l % 4) + j;
      if (row < m && tok < n) {
        if constexpr (NORM != kNormNone) {
          const float r = inv_rms(tok);
          sg *= r, su *= r;
        }
        const float gt = __bfloat162float(__float2bfloat16_rn(sg));
        out[int64_t(tok) * m + row] = __float2bfloat16_rn(gt / (1.f + __expf(-gt)) *
                                                          __bfloat162float(__float2bfloat16_rn(su)));
      }
    }
  } else {
    // This thread's outputs (at most 2: 128 * NT <= 2 * 256) summed over the warps.
    constexpr int kItems = (128 * NT + WARPS * 32 - 1) / (WARPS * 32);
    float sum[kItems];
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const int e = threadIdx.x + it * WARPS * 32;
      sum[it] = 0.f;
      if (e < 128 * NT) {
#pragma unroll
        for (int v = 0; v < WARPS; ++v) sum[it] += red[v][e / 128][(e / 32) % 4][e % 32];
      }
    }
    if constexpr (SPLIT > 1) {
      // Publish this part's sums, count arrivals; the last block of the tile adds the others'
      // (in part order, so the result does not depend on which block came last) and goes on.
      float* slots = p.split_scratch + bid * SPLIT * (128 * NT);
#pragma unroll
      for (int it = 0; it < kItems; ++it) {
        const int e = threadIdx.x + it * WARPS * 32;
        if (e < 128 * NT) slots[part * (128 * NT) + e] = sum[it];
      }
      __threadfence();
      __syncthreads();
      __shared__ int s_last;
      if (threadIdx.x == 0) {
        s_last = atomicAdd(p.split_count + bid, 1) == SPLIT - 1;
        if (s_last) p.split_count[bid] = 0;  // ready for the next launch (it starts after this grid ends)
      }
      __syncthreads();
      if (!s_last) return;
      __threadfence();
#pragma unroll
      for (int it = 0; it < kItems; ++it) {
        const int e = threadIdx.x + it * WARPS * 32;
        if (e < 128 * NT) {
          float total = 0.f;
#pragma unroll
          for (int q = 0; q < SPLIT; ++q) total += q == part ? sum[it] : __ldcg(slots + q * (128 * NT) + e);
          sum[it] = total;
        }
      }
    }
    // EPI_ADD with p.next_h: [token][row in tile] squares of the new out values.
    __shared__ float s_sq[EPI == kEpiAdd ? 8 * NT : 1][kRowsPerBlock];
    const bool next = EPI == kEpiAdd && p.next_h != nullptr;
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const int e = threadIdx.x + it * WARPS * 32;
      if (e >= 128 * NT) break;
      const int i = e / 128, j = (e / 32) % 4, l = e % 32;
      float s = sum[it];
      const int64_t row = row0 + l / 4 + (j >= 2 ? 8 : 0);
      const int tok = 8 * i + 2 * (l % 4) + (j & 1);
      if (row < m && tok < n) {
        if constexpr (NORM != kNormNone) s *= inv_rms(tok);
        if (bias) s += bias[row];
        const int64_t o = int64_t(tok) * m + row;
        if constexpr (EPI == kEpiAdd) s = __bfloat162float(__float2bfloat16_rn(s)) + __bfloat162float(out[o]);
        const bf16 ov = __float2bfloat16_rn(s);
        out[o] = ov;
        if constexpr (EPI == kEpiRope) p.rope.v_cache[int64_t(p.rope.slots[tok]) * m + row] = ov;  // v segment
        if constexpr (EPI == kEpiAdd) {
          if (next) {
            const float f = __bfloat162float(ov);
            p.next_h[o] = __float2bfloat16_rn(f * p.next_norm_w[row]);
            s_sq[tok][row - row0] = f * f;
          }
        }
      }
    }
    if constexpr (EPI == kEpiAdd) {
      if (next) {  // uniform over the block
        __syncthreads();
        if (threadIdx.x < n) {
          float q = 0.f;
#pragma unroll
          for (int r = 0; r < kRowsPerBlock; ++r) q += row0 + r < m ? s_sq[threadIdx.x][r] : 0.f;
          p.next_ss[(row0 / kRowsPerBlock) * kGemvMaxTokens + threadIdx.x] = q;
        }
      }
    }
  }
}

// Any shape, any alignment: one warp per (row, token). Used only off the fast path.
__global__ void gemv_fallback_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                     const float* __restrict__ bias, bf16* __restrict__ out, int n, int64_t m,
                                     int64_t k) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int tok = blockIdx.y, lane = threadIdx.x % 32;
  if (row >= m) return;
  const bf16* wr = w + row * k;
  const bf16* xr = x + int64_t(tok) * k;
  float s = 0.f;
  for (int64_t i = lane; i < k; i += 32) s += __bfloat162float(wr[i]) * __bfloat162float(xr[i]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) out[int64_t(tok) * m + row] = __float2bfloat16_rn(s + (bias ? bias[row] : 0.f));
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int64_t gemv_blocks(int64_t m) { return (m + kRowsPerBlock - 1) / kRowsPerBlock; }

// One segment (no fusion) or the segments / fusions in a.
GemvArgs single(const bf16* x, const bf16* w, const float* bias, bf16* out, int n, int64_t m, int64_t k) {
  GemvArgs a{};
  a.x = x;
  a.n = n;
  a.k = k;
  a.seg0 = GemvSeg{w, bias, out, m};
  a.blk1 = a.blk2 = gemv_blocks(m);
  return a;
}

template <int UNROLL, int LAUNCH, int WARPS = kWarps, int NORM = kNormNone, int EPI = kEpiStore, int NT = 1,
          int SPLIT = 1, class WF = WeightBf16>
void launch_mma(const GemvArgs& a, cudaStream_t s, float eps = 0.f) {
  const int64_t blocks = (a.blk2 + gemv_blocks(a.seg2.m)) * SPLIT;
  if constexpr (LAUNCH == kLaunchPlain) {
    gemv_mma_kernel<UNROLL, LAUNCH, WARPS, NORM, EPI, NT, SPLIT, WF><<<unsigned(blocks), WARPS * 32, 0, s>>>(a, eps);
    GRETA_CUDA_LAUNCH_CHECK();
  } else {
    const size_t smem = WF::kDot ? dot_smem_bytes(a.k) : 0;  // the int8 copy of x
    launch_pdl(gemv_mma_kernel<UNROLL, LAUNCH, WARPS, NORM, EPI, NT, SPLIT, WF>, dim3(unsigned(blocks)),
               dim3(WARPS * 32), smem, s, a, eps);
  }
}

}  // namespace
// Packed weights (a.wfmt != BF16; gemv_quant.cu): the pipelined PDL kernel, one token tile.
void launch_quant(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s);
namespace {

// The production variants (PDL, 2 chunks per lane per iteration; pipelined when a.pipeline)
// with the token tiles n needs.
template <int LAUNCH, int NORM, int EPI, int SPLIT>
void launch_tiles_as(const GemvArgs& a, float eps, cudaStream_t s) {
  if (a.n <= 8) launch_mma<2, LAUNCH, kWarps, NORM, EPI, 1, SPLIT>(a, s, eps);
  else if (a.n <= 16) launch_mma<2, LAUNCH, kWarps, NORM, EPI, 2, SPLIT>(a, s, eps);
  else launch_mma<2, LAUNCH, kWarps, NORM, EPI, 4, SPLIT>(a, s, eps);
}
// Split-K launches stay unpipelined: measured slower pipelined (docs/notes/gemv.md, "Getting bytes in flight earlier").
template <int NORM, int EPI, int SPLIT = 1>
void launch_tiles(const GemvArgs& a, float eps, cudaStream_t s) {
  if (a.wfmt != int32_t(DType::BF16)) {
    launch_quant(a, eps, NORM, EPI, s);
    return;
  }
  if (a.pipeline && SPLIT == 1) launch_tiles_as<kLaunchPipe, NORM, EPI, SPLIT>(a, eps, s);
  else launch_tiles_as<kLaunchPdl, NORM, EPI, SPLIT>(a, eps, s);
}

void launch_fallback(const bf16* x, const bf16* w, const float* bias, bf16* out, int n, int64_t m, int64_t k,
                     cudaStream_t s) {
  const int warps = 8;
  dim3 grid(unsigned((m + warps - 1) / warps), unsigned(n));
  gemv_fallback_kernel<<<grid, warps * 32, 0, s>>>(x, w, bias, out, n, m, k);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace
}  // namespace greta::cuda
