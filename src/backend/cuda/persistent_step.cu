// The persistent decode step (persistent_step.h): one block per SM runs every phase of the step.
//
// Weight stream. Block b of G owns rows [M b / G, M (b + 1) / G) of every GEMV phase (M: the
// phase's rows over all its segments; whole rows, so no partial sums meet across blocks), and its
// warp w every 8th of those from the w-th. Each warp keeps `slots` pieces of up to 4 KB of its rows
// in flight as bulk copies into its own ring of shared memory, each completing on the slot's
// mbarrier; lane 0 refills a slot as soon as the warp has read it, walking its rows through all
// the step's GEMV phases. So when the arithmetic of a phase waits, the ring still fills with the
// next phase's weights, and a block that finished early keeps the memory busy.
//
// Packed weights (Q8_0, Q4_0): a piece is 4 KB of a row's quants, and the same bulk-copy
// arrival brings the piece's scales behind it in the slot (from the 16-byte boundary below them,
// so copies stay aligned whatever the row length). The phase's input is staged quantized to int8
// per 32 values with each group's scale and sum, as the graph path's GEMV takes it (gemv_dot.cuh),
// and the lanes take dp4a dot products of 16-byte columns.
//
// Phase order. A phase starts when the previous phase's done count (one arrival per block, a
// release after the block's outputs are written) reaches G; thread 0 polls it with acquire loads
// and the block's barrier passes that on. Activations written during the launch are read through
// L2 (ld.cg): L1 is not coherent across SMs. A phase's input is staged in shared memory as bf16
// [n][k] in one pass over L2 (a normed input as x * norm, its 1/rms applied to the phase's
// outputs), then every warp dots its rows' pieces with it. The gate and up
// rows are taken in pairs, so SwiGLU happens where the pair's products are.
//
// Claimed units (PersistentStepArgs::claimed > 0): only the first units of a GEMV phase are owned
// as above; a warp done with its own claims the others one at a time from the phase's claim
// count, and reads their weights straight from global memory, not through its ring (which by then
// holds the next phase's pieces). Blocks thus finish a phase closer together: the ones that
// streamed faster take more of its tail.
//
// Attention items (token, kv head, partition of positions; persistent_attention.cuh) are spread
// over the blocks, the partition-major order putting the first partition of every head on a
// different block.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <type_traits>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/persistent_attention.cuh"
#include "backend/cuda/persistent_block.cuh"
#include "backend/cuda/persistent_piece_dot.cuh"
#include "backend/cuda/persistent_staging.cuh"
#include "backend/cuda/persistent_step.h"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

using namespace persistent;  // the block's shape, the attention item

// A slot of a ring with packed weights: the piece, its scales (a 4-bit piece's 256 groups take
// 512 bytes) and the up to 15 bytes before them that keep the scales' copy 16-byte aligned.
constexpr int kPackedSlotBytes = kPieceBytes + 512 + 16;
constexpr int kMaxSlots = 12;

// Shared memory, in order: ring [kWarps][slots][slot bytes] | in [n][max_k] bf16 (packed weights'
// inputs: [n] of max_k int8 values then float2 (scale, sum) a group, in the same 2 max_k bytes) |
// scratch floats (the attention item's, or a residual phase's rows of the residual) | full
// mbarriers [kWarps][kMaxSlots] | block reduction [kWarps][kMaxTok] | the phase's output scale a
// token [kMaxTok] (stage_scale) | the step's tokens (StepTokens).
constexpr size_t kFixedSmem = size_t(kWarps) * kMaxSlots * 8 + size_t(kWarps + 1) * kMaxTok * 4 + sizeof(StepTokens) +
                              16;
__host__ __device__ inline size_t round128(size_t b) { return (b + 127) / 128 * 128; }
__host__ __device__ constexpr int slot_bytes(bool packed) { return packed ? kPackedSlotBytes : kPieceBytes; }
__host__ __device__ inline size_t ring_bytes(int slots, bool packed) {
  return size_t(kWarps) * slots * slot_bytes(packed);
}
__host__ __device__ inline size_t in_bytes(int n, int max_k) { return round128(size_t(n) * max_k * 2); }

__device__ __forceinline__ int ld_acquire(const int32_t* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Thread 0: wait until *count reaches want. Debug builds stop the kernel after ~4e9 cycles
// (seconds) instead of hanging when a block never arrives.
__device__ void wait_count(const int32_t* count, int want, int phase) {
#ifndef NDEBUG
  const long long t0 = clock64();
#endif
  while (ld_acquire(count) < want) {
#ifndef NDEBUG
    if (clock64() - t0 > 4000000000LL) {
      printf("persistent step: block %d waited too long for phase %d (%d of %d blocks done)\n", int(blockIdx.x), phase,
             ld_acquire(count), want);
      __trap();
    }
#endif
  }
}

__device__ __forceinline__ int64_t global_ns() {
  int64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ int sm_id() {
  int id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}

__device__ __forceinline__ int phase_rows(const PersistentPhase& p) { return p.rows[0] + p.rows[1] + p.rows[2]; }
__device__ __forceinline__ int row_begin(int m, int b) { return int(int64_t(m) * b / int(gridDim.x)); }
// A phase's units of work: rows, or for a gated phase (gate, up) pairs of rows. A block owns
// units [row_begin(units, b), row_begin(units, b + 1)); its warp w every 8th from the w-th.
__device__ __forceinline__ int phase_units(const PersistentPhase& p) { return p.gated ? p.rows[0] : phase_rows(p); }
// The units [0, fixed_units) that blocks own as above; the rest, the last `claimed` percent of a
// phase, go to whichever warps finish their own first (gemv_rows).
__device__ __forceinline__ int fixed_units(int units, int claimed) {
  return units - int(int64_t(units) * claimed / 100);
}
// Where a warp's weight stream is: phase, row, byte offset in the row (ph == n_phases at its
// end), and what it needs of the phase in registers: the per-piece work must not wait on loads of
// the phase table (global memory, and the acquire loads of the phase waits empty L1). In a gated
// phase the rows are taken in stream order 2u (gate row u), 2u + 1 (up row u) for each unit u.
struct Cursor {
  int ph, row, off;
  int gated;
  int row_bytes, row_end;  // the phase's row size (quants for packed weights); the end of this block's rows
  int end0, end1;          // rows of segment 0, of segments 0 and 1
  int end2, shift;         // packed: the phase's rows; quant bytes a scale byte is 1 << shift (bf16: 0)
  // The segments' weights (named, not an array: a runtime index would put the cursor in local
  // memory). Packed: their quant planes, each followed by its scale plane (quant_planes.h).
  const unsigned char *w0, *w1, *w2;
};

// The first row of row r's segment.
__device__ __forceinline__ int segment_first(int r, int end0, int end1) {
  return r < end0 ? 0 : r < end1 ? end0 : end1;
}

// Where the cursor's piece is: its segment's weights (base), the piece's byte offset in them
// (at) and the segment's rows.
struct PieceSource {
  const unsigned char* base;
  int64_t at;
  int seg_rows;
};
__device__ __forceinline__ PieceSource piece_source(const Cursor& c) {
  if (c.gated) return {c.row & 1 ? c.w1 : c.w0, int64_t(c.row >> 1) * c.row_bytes + c.off, c.end0};
  const bool in0 = c.row < c.end0, in1 = c.row < c.end1;
  const int first = segment_first(c.row, c.end0, c.end1);
  return {in0   ? c.w0
          : in1 ? c.w1
                : c.w2,
          int64_t(c.row - first) * c.row_bytes + c.off,
          (in0   ? c.end0
           : in1 ? c.end1
                 : c.end2) -
              first};
}

// The warp's first row at or after phase ph.
template <bool PACKED>
__device__ __forceinline__ void seek(const PersistentStepArgs& a, int ph, int warp, Cursor& c) {
  for (; ph < a.n_phases; ++ph) {
    const PersistentPhase& p = a.phases[ph];
    if (p.kind != PersistentPhaseKind::kGemv) continue;
    const int units = fixed_units(phase_units(p), a.claimed), u = row_begin(units, int(blockIdx.x)) + warp;
    const int per = p.gated ? 2 : 1;  // rows a unit
    if (u < row_begin(units, int(blockIdx.x) + 1)) {
      c.ph = ph;
      c.row = per * u;
      c.off = 0;
      c.gated = p.gated;
      const PersistentWeights f = PACKED ? p.weights : PersistentWeights::kBf16;
      c.row_bytes = weight_row_bytes(f, p.k);
      c.row_end = per * row_begin(units, int(blockIdx.x) + 1);
      c.end0 = p.rows[0];
      c.end1 = p.rows[0] + p.rows[1];
      c.w0 = static_cast<const unsigned char*>(p.w[0]);
      c.w1 = static_cast<const unsigned char*>(p.w[1]);
      c.w2 = static_cast<const unsigned char*>(p.w[2]);
      if constexpr (PACKED) {
        c.end2 = phase_rows(p);
        c.shift = scale_shift(f);
      }
      return;
    }
  }
  c.ph = a.n_phases;
}

template <bool PACKED>
__device__ __forceinline__ void advance(const PersistentStepArgs& a, int warp, Cursor& c) {
  c.off += kPieceBytes;
  if (c.off < c.row_bytes) return;
  c.off = 0;
  if (c.gated && (c.row & 1) == 0) {  // the unit's up row follows its gate row
    ++c.row;
    return;
  }
  c.row += c.gated ? 2 * kWarps - 1 : kWarps;
  if (c.row < c.row_end) return;
  seek<PACKED>(a, c.ph + 1, warp, c);
}

// Lane 0: the cursor's piece into a slot, completing on the slot's mbarrier; packed weights'
// scales follow the piece, from the 16-byte boundary at or below them (scale planes are 256-byte
// aligned, so the reader finds the same offset from the piece's place in its segment). The stream
// is read once: its lines are the L2's first to evict (l2_policy).
template <bool PACKED>
__device__ __forceinline__ void issue(const Cursor& c, unsigned char* slot, uint64_t* bar) {
  const PieceSource src = piece_source(c);
  const int64_t at = src.at;
  const unsigned char* w = src.base + at;
  const int bytes = min(kPieceBytes, c.row_bytes - c.off);
  if constexpr (PACKED) {
    if (c.shift != 0) {
      const int mis = int((at >> c.shift) & 15);
      const unsigned char* sc = src.base + align_plane(size_t(c.row_bytes) * src.seg_rows) + (at >> c.shift) - mis;
      bulk_copy2_to_shared(slot, w, bytes, slot + kPieceBytes, sc, (mis + (bytes >> c.shift) + 15) & ~15, bar,
                           l2_policy(true));
      return;
    }
  }
  bulk_copy_to_shared(slot, w, bytes, bar, l2_policy(true));
}

// A residual phase's rows of the residual stream that this block adds to, [n][its units] from
// out, loaded by the staging's threads before the input (kept in registers through it) so their
// round trip passes with the input's: read at each row's write, it came after the row's dot
// product, one exposed trip a row. store_residual puts them in shared memory; the block's
// barrier publishes them. n times the units must fit kResidualLoads loads a thread.
constexpr int kResidualLoads = 2;
struct ResidualLoads {
  float v[kResidualLoads] = {};
};
__device__ __forceinline__ ResidualLoads load_residual(const PersistentPhase& p, int n, int claimed) {
  const int units = fixed_units(phase_units(p), claimed), u0 = row_begin(units, int(blockIdx.x));
  const int rows = row_begin(units, int(blockIdx.x) + 1) - u0;
  ResidualLoads r;
#pragma unroll
  for (int j = 0; j < kResidualLoads; ++j) {
    const int e = int(threadIdx.x) + j * kThreads;
    if (e < n * rows) r.v[j] = __bfloat162float(__ldcg(p.out + int64_t(e / rows) * p.out_stride + u0 + e % rows));
  }
  return r;
}
__device__ __forceinline__ void store_residual(const ResidualLoads& r, const PersistentPhase& p, int n, int claimed,
                                               float* res) {
  const int units = fixed_units(phase_units(p), claimed);
  const int rows = row_begin(units, int(blockIdx.x) + 1) - row_begin(units, int(blockIdx.x));
#pragma unroll
  for (int j = 0; j < kResidualLoads; ++j) {
    const int e = int(threadIdx.x) + j * kThreads;
    if (e < n * rows) res[e] = r.v[j];
  }
}

// A warp's state while streaming: its ring, the slot it reads next and the issue cursor.
struct Stream {
  unsigned char* ring;
  uint64_t* bars;
  int slot;
  uint32_t parity;
  Cursor next;
};

// One row of the warp's stream: its pieces taken from the ring, dotted with the staged input of
// up to N tokens (n of them live), each summed over the warp (every lane holds the sums).
// row_at: the row's byte offset in its segment (packed: where its scales sit in their plane).
// F: the phase's weight format; PACKED: the kernel's (the ring's slot size and the copies).
template <int N, PersistentWeights F, bool PACKED>
__device__ __forceinline__ void row_dot(const PersistentStepArgs& a, int row_bytes, int64_t row_at,
                                        const unsigned char* in, Stream& s, float (&acc)[N]) {
  constexpr int kSlot = slot_bytes(PACKED);
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int n = a.n_tokens;
  const size_t x_stride = size_t(a.max_k) * 2;  // bytes between tokens' staged inputs
#pragma unroll
  for (int t = 0; t < N; ++t) acc[t] = 0.f;
  for (int off = 0; off < row_bytes; off += kPieceBytes) {
    const int bytes = min(kPieceBytes, row_bytes - off);
    mbarrier_wait(s.bars + s.slot, s.parity);
    const unsigned char* buf = s.ring + size_t(s.slot) * kSlot;
    // Packed: where the piece's scales start in the slot (issue's alignment offset).
    const unsigned char* sc = buf + kPieceBytes + int(((row_at + off) >> scale_shift(F)) & 15);
    // A whole piece takes its columns with no bounds test, so their shared-memory loads can all
    // be issued before the first dot product; a row's last, shorter piece tests each column.
    if (bytes == kPieceBytes) piece_dot<N, F, true>(buf, sc, bytes, off, in, x_stride, a.max_k, n, acc);
    else piece_dot<N, F, false>(buf, sc, bytes, off, in, x_stride, a.max_k, n, acc);
    __syncwarp();  // every lane has read the slot before it is refilled
    if (s.next.ph < a.n_phases) {
      if (lane == 0) issue<PACKED>(s.next, s.ring + size_t(s.slot) * kSlot, s.bars + s.slot);
      advance<PACKED>(a, warp, s.next);
    }
    if (++s.slot == a.slots) s.slot = 0, s.parity ^= 1u;
  }
#pragma unroll
  for (int t = 0; t < N; ++t)
    if (N == 1 || t < n) acc[t] = warp_sum(acc[t]);
}

// A claimed row, read straight from global memory: its quants (bf16: its values) at q and, for
// packed weights, the scales of its first group at sc; otherwise as row_dot. Every piece takes the
// bounds-tested columns: one inlined copy of the dot products, as this path is only the phases'
// tails.
template <int N, PersistentWeights F>
__device__ __forceinline__ void row_dot_global(int max_k, int n, int row_bytes, const unsigned char* q,
                                               const unsigned char* sc, const unsigned char* in, float (&acc)[N]) {
  const size_t x_stride = size_t(max_k) * 2;
#pragma unroll
  for (int t = 0; t < N; ++t) acc[t] = 0.f;
  for (int off = 0; off < row_bytes; off += kPieceBytes) {
    const int bytes = min(kPieceBytes, row_bytes - off);
    piece_dot<N, F, false>(q + off, sc + (off >> scale_shift(F)), bytes, off, in, x_stride, max_k, n, acc);
  }
#pragma unroll
  for (int t = 0; t < N; ++t)
    if (N == 1 || t < n) acc[t] = warp_sum(acc[t]);
}

// Where a phase's claimed units are read from (values, as gemv_rows' other fields): the segments'
// weights, the phase's rows, the units past the owned ones and the phase's claim count.
struct ClaimSource {
  const unsigned char *w0, *w1, *w2;
  int rows;  // over all segments
  int pool;  // claimed units: [fixed, fixed + pool)
  int32_t* count;
};

// Row r (of segment rows [first, first + seg_rows) at base) in global memory: its values or
// quants, and for packed weights the scales of its first group (quant_planes.h: the scale plane
// follows the quants, 256-byte aligned).
struct RowSource {
  const unsigned char* q;
  const unsigned char* sc;
};
template <PersistentWeights F>
__device__ __forceinline__ RowSource row_source(const unsigned char* base, int row_in_seg, int seg_rows,
                                                int row_bytes) {
  const int64_t at = int64_t(row_in_seg) * row_bytes;
  if constexpr (F == PersistentWeights::kBf16) return {base + at, base + at};  // no scales
  return {base + at, base + align_plane(size_t(row_bytes) * seg_rows) + (at >> scale_shift(F))};
}

// The claimed units of a phase (gemv_rows' arguments; units: the owned ones, which come first),
// one at a time: the next claim goes out before the current unit's loads, so its round trip to
// L2 overlaps them, and a claim past the pool ends the loop.
template <int N, PersistentWeights F>
__device__ __forceinline__ void claimed_units(ClaimSource cl, int max_k, int n, bf16* out, int64_t out_stride,
                                              int residual, int gated, int units, int row_bytes, int end0, int end1,
                                              const unsigned char* in, const float* scale) {
  const int lane = int(threadIdx.x % 32);
  int c = 0;
  if (lane == 0) c = atomicAdd(cl.count, 1);
  c = __shfl_sync(0xffffffffu, c, 0);
  while (c < cl.pool) {
    const int u = units + c;
    if (lane == 0) c = atomicAdd(cl.count, 1);
    bf16* o = out + int64_t(lane) * out_stride + u;
    // Not staged: this block does not own the row. Read before the row's write, by the writer.
    const float r = residual && lane < n ? __bfloat162float(__ldcg(o)) : 0.f;
    // The unit's rows (gated: gate row u, then up row u), through one call site of the dot products.
    const int first = gated ? 0 : segment_first(u, end0, end1);
    const unsigned char* base = gated || u < end0 ? cl.w0 : u < end1 ? cl.w1 : cl.w2;
    const int seg_rows = (gated || u < end0 ? end0 : u < end1 ? end1 : cl.rows) - first;
    float acc[N], up[N] = {};
#pragma unroll 1
    for (int h = 0; h <= gated; ++h) {
      const RowSource w = row_source<F>(h ? cl.w1 : base, u - first, seg_rows, row_bytes);
      float d[N];
      row_dot_global<N, F>(max_k, n, row_bytes, w.q, w.sc, in, d);
#pragma unroll
      for (int t = 0; t < N; ++t) {
        if (h) up[t] = d[t];
        else acc[t] = d[t];
      }
    }
    if (lane < n) {
      const float v = lane_value(acc, lane, scale[lane]);
      *o = __float2bfloat16_rn(gated ? v / (1.f + __expf(-v)) * lane_value(up, lane, scale[lane]) : v + r);
    }
    c = __shfl_sync(0xffffffffu, c, 0);
  }
}

// The warp's units of a GEMV phase, for up to N tokens: N is a template argument so the token
// loops unroll with no branch per 16 bytes at the common small counts. A plain unit is a row,
// written (or added to the residual) rounded to bf16; a gated unit is the pair (gate row u, up
// row u), written as silu(g) u of the two bf16-rounded products, rounded to bf16.
// The phase's fields come in as values: the loop must not reload them from the table after every
// wait (the waits are compiler barriers). units: the owned ones (fixed_units); end0, end1: the
// ends of segments 0 and 1; scale: the tokens' output scales (stage_scale), read where a row is
// written, not held through the loop.
template <int N, PersistentWeights F, bool PACKED>
__device__ __forceinline__ void gemv_rows(const PersistentStepArgs& a, bf16* out, int64_t out_stride, int residual,
                                          int gated, int units, int k, int end0, int end1, const unsigned char* in,
                                          const float* scale, const float* res, Stream& s) {
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int n = a.n_tokens, row_bytes = weight_row_bytes(F, k);
  const int u0 = row_begin(units, int(blockIdx.x)), u1 = row_begin(units, int(blockIdx.x) + 1);
  for (int u = u0 + warp; u < u1; u += kWarps) {
    bf16* o = out + int64_t(lane) * out_stride + u;  // lane t < n: token t's output
    float acc[N];
    if (gated) {  // gate row u, then up row u: the same place in their segments
      float up[N];
      row_dot<N, F, PACKED>(a, row_bytes, int64_t(u) * row_bytes, in, s, acc);
      row_dot<N, F, PACKED>(a, row_bytes, int64_t(u) * row_bytes, in, s, up);
      if (lane < n) {
        const float g = lane_value(acc, lane, scale[lane]);
        *o = __float2bfloat16_rn(g / (1.f + __expf(-g)) * lane_value(up, lane, scale[lane]));
      }
      continue;
    }
    const float r = residual && lane < n ? res[lane * (u1 - u0) + u - u0] : 0.f;  // staged (load_residual)
    row_dot<N, F, PACKED>(a, row_bytes, int64_t(u - segment_first(u, end0, end1)) * row_bytes, in, s, acc);
    if (lane < n) *o = __float2bfloat16_rn(lane_value(acc, lane, scale[lane]) + r);
  }
}

// A GEMV phase's owned units at the step's token count.
template <PersistentWeights F, bool PACKED>
__device__ __forceinline__ void gemv_phase(const PersistentStepArgs& a, const PersistentPhase& p,
                                           const unsigned char* in, const float* scale, const float* res, Stream& s) {
  const int units = fixed_units(phase_units(p), a.claimed), e0 = p.rows[0], e1 = p.rows[0] + p.rows[1];
  const int g = p.gated;
  if (a.n_tokens == 1)
    gemv_rows<1, F, PACKED>(a, p.out, p.out_stride, p.residual, g, units, p.k, e0, e1, in, scale, res, s);
  else if (a.n_tokens == 2)
    gemv_rows<2, F, PACKED>(a, p.out, p.out_stride, p.residual, g, units, p.k, e0, e1, in, scale, res, s);
  else if (a.n_tokens <= 4)
    gemv_rows<4, F, PACKED>(a, p.out, p.out_stride, p.residual, g, units, p.k, e0, e1, in, scale, res, s);
  else gemv_rows<kMaxTok, F, PACKED>(a, p.out, p.out_stride, p.residual, g, units, p.k, e0, e1, in, scale, res, s);
}

// A GEMV phase's claimed units (phase table entry p, its claim count at count), after its owned
// ones. Not inlined, and called from one place: the kernel's owned-row loops keep their registers
// whatever this path needs.
template <bool PACKED>
__device__ __noinline__ void claimed_phase(const PersistentPhase* pp, int32_t* count, int claimed, int max_k, int n,
                                           const unsigned char* in, const float* scale) {
  const PersistentPhase& p = *pp;
  const int all = phase_units(p), units = fixed_units(all, claimed);
  const ClaimSource cl{static_cast<const unsigned char*>(p.w[0]),
                       static_cast<const unsigned char*>(p.w[1]),
                       static_cast<const unsigned char*>(p.w[2]),
                       phase_rows(p),
                       all - units,
                       count};
  const int e0 = p.rows[0], e1 = p.rows[0] + p.rows[1];
  const PersistentWeights f = PACKED ? p.weights : PersistentWeights::kBf16;
  auto run = [&](auto fc) {
    constexpr PersistentWeights F = decltype(fc)::value;
    const int rb = weight_row_bytes(F, p.k);
    if (n == 1)
      claimed_units<1, F>(cl, max_k, n, p.out, p.out_stride, p.residual, p.gated, units, rb, e0, e1, in, scale);
    else if (n == 2)
      claimed_units<2, F>(cl, max_k, n, p.out, p.out_stride, p.residual, p.gated, units, rb, e0, e1, in, scale);
    else if (n <= 4)
      claimed_units<4, F>(cl, max_k, n, p.out, p.out_stride, p.residual, p.gated, units, rb, e0, e1, in, scale);
    else
      claimed_units<kMaxTok, F>(cl, max_k, n, p.out, p.out_stride, p.residual, p.gated, units, rb, e0, e1, in, scale);
  };
  if (f == PersistentWeights::kBf16) run(std::integral_constant<PersistentWeights, PersistentWeights::kBf16>{});
  if constexpr (PACKED) {
    if (f == PersistentWeights::kQ8_0) run(std::integral_constant<PersistentWeights, PersistentWeights::kQ8_0>{});
    else if (f == PersistentWeights::kQ4_0) run(std::integral_constant<PersistentWeights, PersistentWeights::kQ4_0>{});
  }
}

// PACKED: some phase has packed weights. A bf16 model's kernel carries none of their state.
template <bool PACKED>
__global__ void __launch_bounds__(kThreads, 1) persistent_step_kernel(const PersistentStepArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  unsigned char* in = smem + ring_bytes(a.slots, PACKED);
  unsigned char* tail = in + in_bytes(a.n_tokens, a.max_k);
  float* scratch = reinterpret_cast<float*>(tail);
  uint64_t* bars = reinterpret_cast<uint64_t*>(tail + round128(size_t(a.scratch_floats) * 4));
  float* red = reinterpret_cast<float*>(bars + kWarps * kMaxSlots);
  float* scale = red + kWarps * kMaxTok;
  StepTokens& tk = *reinterpret_cast<StepTokens*>(scale + kMaxTok);
  if (int(threadIdx.x) < kWarps * a.slots) mbarrier_init(bars + threadIdx.x);
  mbarrier_init_fence();
  __syncthreads();

  Stream s{smem + size_t(warp) * a.slots * slot_bytes(PACKED), bars + warp * a.slots, 0, 0u, {}};
  seek<PACKED>(a, 0, warp, s.next);  // every lane follows the cursor (uniform control flow); lane 0 issues
  for (int q = 0; q < a.slots && s.next.ph < a.n_phases; ++q) {
    if (lane == 0) issue<PACKED>(s.next, s.ring + size_t(q) * slot_bytes(PACKED), s.bars + q);
    advance<PACKED>(a, warp, s.next);
  }
  // The step's tokens, while the first copies are in flight; the first phase's barrier publishes them.
  for (int i = int(threadIdx.x); i < a.n_tokens * kTableBlocks; i += kThreads) {
    const int t = i / kTableBlocks, e = i % kTableBlocks, seq = a.st.token_seq[t];
    const int b0 = a.st.block_begin[seq], b1 = a.st.block_begin[seq + 1];
    tk.blocks[t][e] = b0 + e < b1 ? a.st.block_ids[b0 + e] : 0;
    if (e == 0) tk.seq[t] = seq, tk.pos[t] = a.st.positions[t], tk.slot[t] = a.st.slot[t];
  }
  int64_t t_end = a.trace ? global_ns() : 0;  // thread 0's clock for the trace
  for (int ph = 0; ph < a.n_phases; ++ph) {
    const PersistentPhase& p = a.phases[ph];
    if (ph > 0 && threadIdx.x == 0) wait_count(a.counters + ph - 1, int(gridDim.x), ph);
    __syncthreads();  // the previous phase is done everywhere; this block reads no earlier input
    int64_t* tr = a.trace && threadIdx.x == 0
                      ? a.trace + (int64_t(ph) * gridDim.x + blockIdx.x) * kPersistentTraceFields
                      : nullptr;
    int64_t t_start = tr ? global_ns() : 0, t_staged = t_start;
    if (p.kind == PersistentPhaseKind::kGemv) {
      const PersistentWeights f = PACKED ? p.weights : PersistentWeights::kBf16;
      const ResidualLoads res = p.residual ? load_residual(p, a.n_tokens, a.claimed) : ResidualLoads{};
      if (f == PersistentWeights::kBf16) stage_input(p, a.n_tokens, a.max_k, reinterpret_cast<bf16*>(in), red, scale);
      else if (f == PersistentWeights::kQ8_0) stage_input_int8<false>(p, a.n_tokens, a.max_k, in, red, scale);
      else stage_input_int8<true>(p, a.n_tokens, a.max_k, in, red, scale);
      if (p.residual) {
        store_residual(res, p, a.n_tokens, a.claimed, scratch);
        __syncthreads();
      }
      if (tr) t_staged = global_ns();
      if (f == PersistentWeights::kBf16) gemv_phase<PersistentWeights::kBf16, PACKED>(a, p, in, scale, scratch, s);
      if constexpr (PACKED) {
        if (f == PersistentWeights::kQ8_0) gemv_phase<PersistentWeights::kQ8_0, true>(a, p, in, scale, scratch, s);
        else if (f == PersistentWeights::kQ4_0) gemv_phase<PersistentWeights::kQ4_0, true>(a, p, in, scale, scratch, s);
      }
      if (a.claimed > 0)
        claimed_phase<PACKED>(a.phases + ph, a.counters + a.n_phases + ph, a.claimed, a.max_k, a.n_tokens, in, scale);
    } else {
      const int n_kv = p.kv.n_kv_heads, items = a.max_parts * a.n_tokens * n_kv;
      for (int it = int(blockIdx.x); it < items; it += int(gridDim.x)) {
        const int part = it / (a.n_tokens * n_kv), t = it / n_kv % a.n_tokens, g = it % n_kv;
        if (part * a.part_len > tk.pos[t]) continue;
        switch (p.kv.head_dim) {  // the sizes persistent_step_head_dim_supported takes
          case 64: attention_item<2>(a, p, tk, t, g, part, scratch); break;
          case 96: attention_item<3>(a, p, tk, t, g, part, scratch); break;
          default: attention_item<4>(a, p, tk, t, g, part, scratch); break;
        }
      }
    }
    __syncthreads();  // the block's outputs are written
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(a.counters + ph, 1);
    }
    if (tr) {
      const int64_t now = global_ns();
      tr[0] += t_start - t_end;
      tr[1] += t_staged - t_start;
      tr[2] += now - t_staged;
      tr[3] = sm_id();
      t_end = now;
    }
  }
}

}  // namespace

bool persistent_step_head_dim_supported(int head_dim) { return head_dim == 64 || head_dim == 96 || head_dim == 128; }

int persistent_step_scratch_floats(int group, int head_dim, int n_tokens, int residual_rows, int blocks) {
  const int attention = 2 * group * head_dim + 2 * head_dim + 2 * kWarps * group + 4;
  return std::max(attention, persistent_step_residual_floats(n_tokens, residual_rows, blocks));
}

int persistent_step_residual_floats(int n_tokens, int residual_rows, int blocks) {
  return n_tokens * ((residual_rows + blocks - 1) / blocks);
}

int persistent_step_max_residual_floats() { return kResidualLoads * kThreads; }

int persistent_step_slots(int n_tokens, int max_k, int scratch_floats, bool packed, size_t smem_limit) {
  const size_t fixed = in_bytes(n_tokens, max_k) + round128(size_t(scratch_floats) * 4) + kFixedSmem;
  if (fixed >= smem_limit) return 0;
  const int slots = int(std::min<size_t>(kMaxSlots, (smem_limit - fixed) / (size_t(kWarps) * slot_bytes(packed))));
  return slots >= 2 ? slots : 0;
}

size_t persistent_step_smem(int n_tokens, int max_k, int scratch_floats, bool packed, int slots) {
  return ring_bytes(slots, packed) + in_bytes(n_tokens, max_k) + round128(size_t(scratch_floats) * 4) + kFixedSmem;
}

size_t persistent_step_counters(int n_phases, int n_tokens, int n_kv_heads) {
  return 2 * size_t(n_phases) + size_t(n_tokens) * n_kv_heads;
}

int persistent_step_blocks(const PersistentStepArgs& a, bool packed, int n_sms) {
  const size_t smem = persistent_step_smem(a.n_tokens, a.max_k, a.scratch_floats, packed, a.slots);
  const auto kernel = packed ? persistent_step_kernel<true> : persistent_step_kernel<false>;
  // The kernel may take up to the device's opt-in limit, so launches (and step graphs) of every
  // step size stay valid whatever size was asked last.
  int device = 0, limit = 0;
  GRETA_CUDA_CHECK(cudaGetDevice(&device));
  GRETA_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem > size_t(limit)) return 0;
  GRETA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));
  int per_sm = 0;
  GRETA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  return per_sm >= 1 ? n_sms : 0;
}

void persistent_step(PersistentStepArgs a, int blocks, bool packed, cudaStream_t s) {
  GRETA_CUDA_CHECK(cudaMemsetAsync(
      a.counters, 0, persistent_step_counters(a.n_phases, a.n_tokens, a.n_kv_heads) * sizeof(int32_t), s));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(blocks));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = persistent_step_smem(a.n_tokens, a.max_k, a.scratch_floats, packed, a.slots);
  cfg.stream = s;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeCooperative;
  attr.val.cooperative = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  if (packed) GRETA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, persistent_step_kernel<true>, a));
  else GRETA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, persistent_step_kernel<false>, a));
}

}  // namespace greta::cuda
