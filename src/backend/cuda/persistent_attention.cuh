// The persistent decode step's attention item (persistent_step.cu runs it in its attention
// phases): one (token, kv head, partition of positions) over the paged bf16 KV cache. It rotates
// its q heads and, for the partition holding the new token, k (written to the cache with v, and
// used from shared memory for that position); the block's warps split the positions with an
// online softmax, merged in shared memory; with several partitions the last to arrive merges them.
#pragma once
#include <cuda_bf16.h>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/persistent_block.cuh"
#include "backend/cuda/persistent_step.h"

namespace greta::cuda::persistent {

__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

// A lane's PER bf16 values of one K or V row (PER of a row of head_dim = 32 PER, so 2 PER-byte
// aligned), kept as loaded: a batch of positions in flight then costs half the registers of
// floats, and the conversion happens at use.
template <int PER>
struct RowBits {
  uint32_t w[(PER + 1) / 2];
};
template <int PER>
__device__ __forceinline__ RowBits<PER> load_bits(const bf16* p) {
  RowBits<PER> r;
  if constexpr (PER == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    r.w[0] = u.x, r.w[1] = u.y;
  } else if constexpr (PER == 2) {
    r.w[0] = *reinterpret_cast<const uint32_t*>(p);
  } else {
    const unsigned short* h = reinterpret_cast<const unsigned short*>(p);
#pragma unroll
    for (int e = 0; e < PER; e += 2) r.w[e / 2] = h[e] | (e + 1 < PER ? uint32_t(h[e + 1]) << 16 : 0u);
  }
  return r;
}
template <int PER>
__device__ __forceinline__ RowBits<PER> bits_of(const float* f) {  // f[PER], rounded to bf16
  RowBits<PER> r;
#pragma unroll
  for (int e = 0; e < PER; e += 2) {
    const uint32_t lo = __bfloat16_as_ushort(__float2bfloat16_rn(f[e]));
    const uint32_t hi = e + 1 < PER ? __bfloat16_as_ushort(__float2bfloat16_rn(f[e + 1])) : 0u;
    r.w[e / 2] = lo | hi << 16;
  }
  return r;
}
template <int PER>
__device__ __forceinline__ float value_of(const RowBits<PER>& r, int e) {
  return __uint_as_float(e % 2 ? r.w[e / 2] & 0xffff0000u : r.w[e / 2] << 16);
}

// Physical slot of position j of token t's sequence (kv_slot), its block id from the shared-memory
// copy of the table's first kTableBlocks entries where it holds it.
__device__ __forceinline__ int64_t step_kv_slot(const StepTokens& tk, int t, const int32_t* table, int j,
                                                int block_size) {
  const int blk = j / block_size;
  return blk < kTableBlocks ? int64_t(tk.blocks[t][blk]) * block_size + j % block_size : kv_slot(table, j, block_size);
}

// Attention of one item: token t, kv head g, positions [p0, p1) of its sequence; head_dim 32 PER.
template <int PER>
__device__ void attention_item(const PersistentStepArgs& a, const PersistentPhase& p, const StepTokens& tk, int t,
                               int g, int part, float* sm) {
  const KVLayerDev L = p.kv;  // a copy: the loops below must not reload it from the phase table
  const int hd = 32 * PER, half = hd / 2, n_kv = L.n_kv_heads, group = p.n_heads / n_kv;
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const DevStep& st = a.st;
  // A decode token attends to its sequence's positions up to its own.
  const int seq = tk.seq[t], pos = tk.pos[t], ctx = pos + 1;
  const int parts = (ctx + a.part_len - 1) / a.part_len;
  const int p0 = part * a.part_len, p1 = min(ctx, p0 + a.part_len);
  const int32_t* table = st.block_ids + st.block_begin[seq];  // past tk.blocks only
  const bool has_new = pos >= p0 && pos < p1;
  // Shared memory: q [group][hd] (rotated), acc [group][hd], k and v of the new token [hd] each,
  // warp maxima and sums [kWarps][group] each, the merge flag.
  float* sq = sm;
  float* sacc = sq + group * hd;
  float* skn = sacc + group * hd;
  float* svn = skn + hd;
  float* swm = svn + hd;
  float* swl = swm + kWarps * group;
  int* slast = reinterpret_cast<int*>(swl + kWarps * group);

  for (int i = int(threadIdx.x); i < group * hd; i += kThreads) sacc[i] = 0.f;
  const bf16* tok = p.in + int64_t(t) * p.in_stride;
  const int64_t kv_row = int64_t(n_kv) * hd;
  constexpr int kBatch = 8;  // positions a warp has in flight (the loop below)
  const int64_t head_off = int64_t(g) * hd + lane * PER;
  // The warp's first batch of cached K/V rows requested into L1 before the prologue: their round
  // trip from memory passes with the prologue's, and after the barrier the loads find them in L1
  // (kept there until the next phase wait's acquire). Requests hold no registers.
  for (int i = 0; i < kBatch; ++i) {
    const int j = p0 + warp * kBatch + i;
    if (j >= p1 || j == pos) continue;
    const int64_t at = step_kv_slot(tk, t, table, j, L.block_size) * kv_row + head_off;
    prefetch_l1(L.k + at);
    prefetch_l1(L.v + at);
  }
  // One pass, every load of it independent of the others (each is a round trip through L2 under
  // the weight stream): rotated pairs of the group's q heads, then (has_new) of the new k, each
  // element computing its own angle; then the new v as it is.
  const int q_pairs = group * half, pairs = q_pairs + (has_new ? half : 0), elems = pairs + (has_new ? hd : 0);
  for (int e = int(threadIdx.x); e < elems; e += kThreads) {
    if (e >= pairs) {
      const int i = e - pairs;
      const bf16 v = __ldcg(tok + int64_t(p.n_heads + n_kv) * hd + int64_t(g) * hd + i);
      svn[i] = __bfloat162float(v);
      L.v[int64_t(tk.slot[t]) * kv_row + int64_t(g) * hd + i] = v;
      continue;
    }
    const bool is_q = e < q_pairs;
    const int h = is_q ? e / half : 0, i = is_q ? e % half : e - q_pairs;
    const bf16* src = is_q ? tok + int64_t(g * group + h) * hd : tok + int64_t(p.n_heads) * hd + int64_t(g) * hd;
    const int i0 = a.neox ? i : 2 * i, i1 = a.neox ? i + half : 2 * i + 1;
    const float x0 = __bfloat162float(__ldcg(src + i0)), x1 = __bfloat162float(__ldcg(src + i1));
    double sd, cd;
    sincos(double(float(pos) * a.inv_freq[i]), &sd, &cd);
    const float c = float(cd), sn = float(sd);
    const bf16 r0 = __float2bfloat16_rn(x0 * c - x1 * sn);
    const bf16 r1 = __float2bfloat16_rn(x0 * sn + x1 * c);
    float* dst = is_q ? sq + h * hd : skn;
    dst[i0] = __bfloat162float(r0);
    dst[i1] = __bfloat162float(r1);
    if (!is_q) {
      const int64_t slot = tk.slot[t];
      L.k[slot * kv_row + int64_t(g) * hd + i0] = r0;
      L.k[slot * kv_row + int64_t(g) * hd + i1] = r1;
    }
  }
  __syncthreads();

  // Each warp takes kBatch positions at a time, every lane loading its values of all of them
  // before any is used (the loads' latency, not their bytes, bounds a short item); lane holds
  // values [lane * PER, + PER) of a row.
  const float sl2 = p.scale * kLog2e;
  // q stays in shared memory (read at each use): registers go to the positions in flight.
  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][PER];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    m[h] = kNoScore;
    l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < PER; ++e) acc[h][e] = 0.f;
  }
  for (int j0 = p0 + warp * kBatch; j0 < p1; j0 += kWarps * kBatch) {
    RowBits<PER> kk[kBatch], vv[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int j = j0 + i;
      if (j >= p1) {
#pragma unroll
        for (int e = 0; e < (PER + 1) / 2; ++e) kk[i].w[e] = vv[i].w[e] = 0u;
      } else if (j == pos) {  // the new token: its k and v are bf16 values already
        kk[i] = bits_of<PER>(skn + lane * PER);
        vv[i] = bits_of<PER>(svn + lane * PER);
      } else {
        const int64_t at = step_kv_slot(tk, t, table, j, L.block_size) * kv_row + head_off;
        kk[i] = load_bits<PER>(L.k + at);
        vv[i] = load_bits<PER>(L.v + at);
      }
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) break;
      float sc[kBatch], mx = m[h], q[PER];
#pragma unroll
      for (int e = 0; e < PER; ++e) q[e] = sq[h * hd + lane * PER + e];
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < PER; ++e) d = fmaf(q[e], value_of(kk[i], e), d);
        sc[i] = j0 + i < p1 ? warp_sum(d) * sl2 : kNoScore;
        mx = fmaxf(mx, sc[i]);
      }
      const float corr = exp2f(m[h] - mx);
      l[h] *= corr;
#pragma unroll
      for (int e = 0; e < PER; ++e) acc[h][e] *= corr;
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        const float pj = j0 + i < p1 ? exp2f(sc[i] - mx) : 0.f;
        l[h] += pj;
#pragma unroll
        for (int e = 0; e < PER; ++e) acc[h][e] = fmaf(pj, value_of(vv[i], e), acc[h][e]);
      }
      m[h] = mx;
    }
  }
  // The warps' states into one: each rescaled to the block's maximum per head and summed.
  if (lane == 0) {
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) break;
      swm[warp * group + h] = m[h], swl[warp * group + h] = l[h];
    }
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (h >= group) break;
    float mx = kNoScore;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, swm[w * group + h]);
    const float f = exp2f(m[h] - mx);
#pragma unroll
    for (int e = 0; e < PER; ++e) atomicAdd(sacc + h * hd + lane * PER + e, acc[h][e] * f);
  }
  __syncthreads();
  // Per head: the block's max and sum (every thread computes them from the warps' values).
  bf16* out = p.out + int64_t(t) * p.out_stride + int64_t(g) * group * hd;
  if (parts == 1) {
    for (int e = int(threadIdx.x); e < group * hd; e += kThreads) {
      const int h = e / hd;
      float mx = kNoScore, sum = 0.f;
      for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, swm[w * group + h]);
      for (int w = 0; w < kWarps; ++w) sum += swl[w * group + h] * exp2f(swm[w * group + h] - mx);
      out[e] = __float2bfloat16_rn(sacc[e] / sum);
    }
    __syncthreads();  // the shared memory is the next item's
    return;
  }
  // Several partitions: this one's state to the partials, the last to arrive merges them.
  const int stride = hd + 2;
  auto partial = [&](int h, int q) {
    return a.partials + ((int64_t(t) * p.n_heads + g * group + h) * a.max_parts + q) * stride;
  };
  for (int e = int(threadIdx.x); e < group * hd; e += kThreads) partial(e / hd, part)[e % hd] = sacc[e];
  if (int(threadIdx.x) < group) {
    const int h = int(threadIdx.x);
    float mx = kNoScore, sum = 0.f;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, swm[w * group + h]);
    for (int w = 0; w < kWarps; ++w) sum += swl[w * group + h] * exp2f(swm[w * group + h] - mx);
    partial(h, part)[hd] = mx;
    partial(h, part)[hd + 1] = sum;
  }
  __threadfence();
  __syncthreads();
  int32_t* arrivals = a.counters + 2 * a.n_phases + t * n_kv + g;  // after the done and claim counts
  if (threadIdx.x == 0) {
    *slast = atomicAdd(arrivals, 1) == parts - 1;
    if (*slast) *arrivals = 0;  // for the next layer's attention
  }
  __syncthreads();
  if (*slast) {
    __threadfence();
    for (int e = int(threadIdx.x); e < group * hd; e += kThreads) {
      const int h = e / hd, i = e % hd;
      float mx = kNoScore;
      for (int q = 0; q < parts; ++q) mx = fmaxf(mx, __ldcg(partial(h, q) + hd));
      float sum = 0.f, o = 0.f;
      for (int q = 0; q < parts; ++q) {
        const float f = exp2f(__ldcg(partial(h, q) + hd) - mx);
        sum += __ldcg(partial(h, q) + hd + 1) * f;
        o += __ldcg(partial(h, q) + i) * f;
      }
      out[e] = __float2bfloat16_rn(o / sum);
    }
  }
  __syncthreads();  // the shared memory is the next item's
}

}  // namespace greta::cuda::persistent
