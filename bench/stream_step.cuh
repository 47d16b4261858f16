// The `stream` variant of gpu_persistent_step_bench: one persistent block per SM whose weight
// stream never waits for a phase. Included by that benchmark after its Phase, Step, kWarps, kThreads and
// ld_acquire.
//
//
// Why this form: every GEMV-tile form of the persistent step trailed the graph, because at each
// phase boundary the memory pipe drained while blocks waited (for the barrier, for the slowest
// block's extra item). Here the weights never wait: each warp owns a ring of shared-memory slots
// that its lane 0 keeps filled with bulk copies (cp.async.bulk, completion on an mbarrier per
// slot), following the warp's rows through all phases of the step without regard to the
// activations. Only the arithmetic waits for the previous phase. So while a block waits at a
// phase boundary its copies of the next phase's weights are already in flight (a block's ring
// holds about 8 us of its share of the bandwidth), and a block with a row more than another in one
// phase only shifts its stream, it does not stall the others'.
//
// Work split: block b of G takes rows [m b / G, m (b + 1) / G) of every phase (whole rows, so no
// partial sums meet across blocks); warp w of its 8 takes every 8th of those rows from the w-th.
// A row streams in pieces of up to 4 KB. A phase begins, after the previous phase's done count
// reaches G, with the block staging its input (x, or silu(gate) * up rounded to bf16) in shared
// memory; a phase ends with the block's done count added (release) after its rows are written.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/bulk_copy.cuh"

namespace stream_step {

constexpr int kPieceBytes = 4096;  // one bulk copy
constexpr int kSlots = 6;          // ring slots a warp
constexpr int kMaxK = 11008;       // the widest input of a phase (down's)
constexpr int kRingBytes = kWarps * kSlots * kPieceBytes;
constexpr size_t kSmemBytes = size_t(kRingBytes) + size_t(kMaxK) * 2 + size_t(kWarps) * kSlots * 8;

// Rows [row_begin(b), row_begin(b + 1)) of a phase belong to block b.
__device__ __forceinline__ int row_begin(const Phase& p, int b) { return int(int64_t(p.m) * b / int(gridDim.x)); }

// Where a warp's weight stream is: phase, row, byte offset in the row. ph == n_ph: at its end.
struct Cursor {
  int ph, row, off;
};

// The warp's first row at or after phase ph.
__device__ __forceinline__ void seek_phase(const Step* __restrict__ s, int n_ph, int ph, int warp, Cursor& c) {
  for (; ph < n_ph; ++ph) {
    const Phase& p = s->ph[ph];
    const int r = row_begin(p, int(blockIdx.x)) + warp;
    if (r < row_begin(p, int(blockIdx.x) + 1)) {
      c = Cursor{ph, r, 0};
      return;
    }
  }
  c = Cursor{n_ph, 0, 0};
}

__device__ __forceinline__ void advance(const Step* __restrict__ s, int n_ph, int warp, Cursor& c) {
  const Phase& p = s->ph[c.ph];
  c.off += kPieceBytes;
  if (c.off < 2 * p.k) return;
  c.off = 0;
  c.row += kWarps;
  if (c.row < row_begin(p, int(blockIdx.x) + 1)) return;
  seek_phase(s, n_ph, c.ph + 1, warp, c);
}

// Lane 0: copy the cursor's piece into a slot; its mbarrier completes when the bytes land.
__device__ __forceinline__ void issue(const Step* __restrict__ s, const Cursor& c, unsigned char* slot, uint64_t* bar) {
  const Phase& p = s->ph[c.ph];
  const int bytes = min(kPieceBytes, 2 * p.k - c.off);
  greta::cuda::bulk_copy_to_shared(slot, reinterpret_cast<const unsigned char*>(p.w + int64_t(c.row) * p.k) + c.off,
                                   bytes, bar, greta::cuda::l2_policy(false));
}

__device__ __forceinline__ float dot8_bf16(const uint4& w, const uint4& x) {
  const __nv_bfloat162* a = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&x);
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 fa = __bfloat1622float2(a[j]), fb = __bfloat1622float2(b[j]);
    s = fmaf(fa.x, fb.x, s);
    s = fmaf(fa.y, fb.y, s);
  }
  return s;
}

// The phase's input into shared memory as bf16 (x, or silu(gate) * up): all of a thread's loads
// are issued before any is used, since this sits between the phase's wait and its arithmetic.
__device__ __forceinline__ void stage_input(const Phase& p, bf16* in) {
  constexpr int kPer = (kMaxK / 8 + kThreads - 1) / kThreads;
  uint4 a[kPer], b[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k0 = 8 * (int(threadIdx.x) + i * kThreads);
    if (k0 < p.k) {
      a[i] = __ldcg(reinterpret_cast<const uint4*>(p.in + k0));
      if (p.swiglu) b[i] = __ldcg(reinterpret_cast<const uint4*>(p.in + p.k + k0));
    }
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k0 = 8 * (int(threadIdx.x) + i * kThreads);
    if (k0 >= p.k) break;
    if (p.swiglu) {
      const bf16* g = reinterpret_cast<const bf16*>(&a[i]);
      const bf16* u = reinterpret_cast<const bf16*>(&b[i]);
      alignas(16) bf16 h[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {  // as input8 computes it, then rounded to bf16
        const float x = __bfloat162float(g[j]);
        h[j] = __float2bfloat16_rn(__bfloat162float(__float2bfloat16_rn(x / (1.f + __expf(-x)))) *
                                   __bfloat162float(u[j]));
      }
      a[i] = *reinterpret_cast<const uint4*>(h);
    }
    *reinterpret_cast<uint4*>(in + k0) = a[i];
  }
}

__global__ void __launch_bounds__(kThreads, 1) step_kernel(const Step* __restrict__ s, int n_ph, int* done) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* in = reinterpret_cast<bf16*>(smem + kRingBytes);                                // [kMaxK]
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kRingBytes + size_t(kMaxK) * 2);  // [kWarps][kSlots]
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (threadIdx.x < kWarps * kSlots) greta::cuda::mbarrier_init(full + threadIdx.x);
  greta::cuda::mbarrier_init_fence();
  __syncthreads();
  unsigned char* ring = smem + size_t(warp) * kSlots * kPieceBytes;
  uint64_t* bars = full + warp * kSlots;

  // Every lane follows the issue cursor (uniform control flow); lane 0 issues.
  Cursor next{};
  seek_phase(s, n_ph, 0, warp, next);
  for (int q = 0; q < kSlots && next.ph < n_ph; ++q) {
    if (lane == 0) issue(s, next, ring + q * kPieceBytes, bars + q);
    advance(s, n_ph, warp, next);
  }
  int slot = 0;
  uint32_t parity = 0;
  for (int ph = 0; ph < n_ph; ++ph) {
    const Phase p = s->ph[ph];
    if (ph > 0 && threadIdx.x == 0)
      while (ld_acquire(done + ph - 1) < int(gridDim.x)) {
      }
    __syncthreads();  // the previous phase is done everywhere, and this block no longer reads `in`
    stage_input(p, in);
    __syncthreads();
    const int r1 = row_begin(p, int(blockIdx.x) + 1);
    for (int r = row_begin(p, int(blockIdx.x)) + warp; r < r1; r += kWarps) {
      float acc = 0.f;
      for (int off = 0; off < 2 * p.k; off += kPieceBytes) {
        const int bytes = min(kPieceBytes, 2 * p.k - off);
        greta::cuda::mbarrier_wait(bars + slot, parity);
        const unsigned char* buf = ring + slot * kPieceBytes;
        const unsigned char* x = reinterpret_cast<const unsigned char*>(in) + off;
#pragma unroll 4
        for (int b = 16 * lane; b < bytes; b += 512)
          acc += dot8_bf16(*reinterpret_cast<const uint4*>(buf + b), *reinterpret_cast<const uint4*>(x + b));
        __syncwarp();  // every lane has read the slot before it is refilled
        if (next.ph < n_ph) {
          if (lane == 0) issue(s, next, ring + slot * kPieceBytes, bars + slot);
          advance(s, n_ph, warp, next);
        }
        if (++slot == kSlots) slot = 0, parity ^= 1u;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (lane == 0) {
        float v = __bfloat162float(__float2bfloat16_rn(acc));
        if (p.res) v += __bfloat162float(__ldcg(p.res + r));
        p.out[r] = __float2bfloat16_rn(v);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(done + ph, 1);
    }
  }
}

}  // namespace stream_step
