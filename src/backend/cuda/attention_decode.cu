// Paged decode attention, split over the context ("flash-decoding").
//
// Work item = one query token (a decode token attends positions 0..pos of its sequence, or
// pos - window + 1 .. pos with a sliding window). Its context is cut into partitions of P positions; a block handles
// one (partition, kv head, token) for all query heads that share the kv head (GQA: K/V are read once per group), and
// writes unnormalised partial results (running max m, sum l, accumulator o) to scratch. The
// partitions are then merged either by the last block of each (token, kv head) to finish
// (`arrivals` counters; a context of one partition is written out directly), or by a second
// kernel (arrivals == null). P is chosen per step so that even one sequence fills the GPU (a
// 4K context with 8 kv heads becomes hundreds of blocks, not 8).
//
// Inside a block: 4 warps; a key row of HD bf16 is read by HD/8 lanes with one 16-byte load
// each (256/HD keys per warp at a time, all loads coalesced), the dot product is finished
// with shuffles inside that lane group, and each lane group runs its own online softmax over
// its keys; groups, then warps, are merged at the end. Scores are kept in log2 units (q is
// prescaled by scale*log2e) so the exponentials are exp2f. A lane group is a power of two of
// lanes: for HD 96 (Phi-3-mini) 16, of which the last 4 load nothing and add zeros.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

constexpr int kWarps = 4;
// Query heads per block (MAXG, a kernel template parameter): the smallest power of two >= the
// GQA group, at most 8; larger groups are split over blockIdx.y. Each head costs a lane 16
// registers of q and accumulators, so sizing this to the model (1 for Llama-2's MHA, 4 for
// Llama-3) instead of always 8 is what keeps enough blocks resident to hide load latency.
int max_g_for(int group) {
  int g = 1;
  while (g < group && g < 8) g *= 2;
  return g;
}

// Dimension d of one (item, head)'s output from its `valid` partitions at base (per partition:
// HD accumulators, then m and l): sum_p o_p 2^(m_p - M) / sum_p l_p 2^(m_p - M). Read through
// L2 (__ldcg): other blocks wrote the partials.
template <int HD>
__device__ float merge_partitions(const float* base, int valid, int d) {
  float mx = kNoScore;
  for (int p = 0; p < valid; ++p) mx = fmaxf(mx, __ldcg(base + p * (HD + 2) + HD));
  float o = 0.f, lsum = 0.f;
  for (int p = 0; p < valid; ++p) {
    const float* s = base + p * (HD + 2);
    const float c = exp2f(__ldcg(s + HD) - mx);
    o += __ldcg(s + d) * c;
    lsum += __ldcg(s + HD + 1) * c;
  }
  return o / lsum;
}

// q [n_tokens, n_heads*HD]; scratch: per (item, head, part): HD accumulators then m, l.
// arrivals (or null: the merge kernel runs next): per (item, blockIdx.y) the number of this
// token's partitions done; zero between launches (the last block resets it); out as the merge
// kernel's.
template <int HD, int kMaxG, int KEYS>
__global__ void __launch_bounds__(kWarps * 32)
    decode_partition_kernel(const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                            DevStep st, int n_heads, int n_kv, float scale_log2, float cap_log2, int window, int part,
                            int n_parts, float* __restrict__ scratch, int32_t* __restrict__ arrivals,
                            bf16* __restrict__ out) {
  constexpr int kLanesPerKey = HD / 8 <= 8 ? 8 : HD / 8 <= 16 ? 16 : 32;  // HD/8 rounded up to a power of two
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  static_assert(HD % 8 == 0 && HD <= 256, "one 16-byte load per lane and key");
  pdl_allow_dependents();
  pdl_wait();  // q and the cache come from the rope kernel (pdl.cuh)
  const int item = blockIdx.z;
  const int t = st.decode_tokens[item];
  const int pos = st.positions[t];
  const int ctx = pos + 1;
  const int lo = window > 0 ? max(0, ctx - window) : 0;  // the first position attended; partitions start there
  const int p0 = lo + blockIdx.x * part;
  if (p0 >= ctx) return;  // the merge reads only partitions that exist for this token (and counts only them)
  const int valid = (ctx - lo + part - 1) / part;
  const int p1 = min(p0 + part, ctx);
  const int G = n_heads / n_kv;
  const int n_gchunks = (G + kMaxG - 1) / kMaxG;
  const int kvh = blockIdx.y / n_gchunks;
  const int g0 = (blockIdx.y % n_gchunks) * kMaxG;
  const int ng = min(kMaxG, G - g0);
  const int head0 = kvh * G + g0;  // first query head of this block

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane / kLanesPerKey, sl = lane % kLanesPerKey;  // key group, lane in group
  const bool dims = sl * 8 < HD;                                  // this lane holds 8 of the head's dims
  const int seq = st.token_seq[t];
  const int32_t* table = st.block_ids + st.block_begin[seq];

  float qf[kMaxG][8];
#pragma unroll
  for (int g = 0; g < kMaxG; ++g) {
    if (g < ng) {
      const uint4 v = dims ? *reinterpret_cast<const uint4*>(q + (int64_t(t) * n_heads + head0 + g) * HD + sl * 8)
                           : make_uint4(0, 0, 0, 0);
      unpack8(v, qf[g]);
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[g][j] *= scale_log2;
    }
  }
  float m[kMaxG], l[kMaxG], acc[kMaxG][8];
#pragma unroll
  for (int g = 0; g < kMaxG; ++g) {
    m[g] = kNoScore;
    l[g] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
  }
  const int64_t row_stride = int64_t(n_kv) * HD;
  const int64_t head_off = int64_t(kvh) * HD + sl * 8;
  constexpr int kStep = kWarps * kKeysPerWarp;
  // The loop bound is uniform over the warp (shuffles below need every lane); lane groups
  // whose key falls past p1 read a valid row and drop it.
  for (int b0 = p0 + warp * kKeysPerWarp; b0 < p1; b0 += KEYS * kStep) {
    // KEYS keys per lane group per iteration: the block-table lookups, then all 2 * KEYS
    // 16-byte K/V loads are issued before any of them is used (kept packed until then).
    bool has[KEYS];
    int64_t so[KEYS];
#pragma unroll
    for (int u = 0; u < KEYS; ++u) {
      const int pk = b0 + sub + u * kStep;
      has[u] = pk < p1;
      so[u] = kv_slot(table, has[u] ? pk : p0, st.block_size) * row_stride + head_off;
    }
    uint4 kr[KEYS], vr[KEYS];
#pragma unroll
    for (int u = 0; u < KEYS; ++u) {
      kr[u] = dims ? *reinterpret_cast<const uint4*>(kc + so[u]) : make_uint4(0, 0, 0, 0);
      vr[u] = dims ? *reinterpret_cast<const uint4*>(vc + so[u]) : make_uint4(0, 0, 0, 0);
    }
    // With several query heads per block each key is used kMaxG times: unpack it once here
    // (measured faster for groups of 4, docs/notes/attention.md). With 1-2 heads, unpacking at each use keeps the
    // register count (and so the blocks per SM) lower.
    constexpr bool kEager = kMaxG >= 4;
    float kfe[kEager ? KEYS : 1][8], vfe[kEager ? KEYS : 1][8];
    if constexpr (kEager) {
#pragma unroll
      for (int u = 0; u < KEYS; ++u) unpack8(kr[u], kfe[u]), unpack8(vr[u], vfe[u]);
    }
#pragma unroll
    for (int g = 0; g < kMaxG; ++g) {
      if (g >= ng) continue;
      float sc[KEYS];
#pragma unroll
      for (int u = 0; u < KEYS; ++u) {
        float kf[8];
        if constexpr (kEager) {
#pragma unroll
          for (int j = 0; j < 8; ++j) kf[j] = kfe[u][j];
        } else {
          unpack8(kr[u], kf);
        }
        float d = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) d += qf[g][j] * kf[j];
        sc[u] = d;
      }
#pragma unroll
      for (int o = kLanesPerKey / 2; o > 0; o /= 2) {
#pragma unroll
        for (int u = 0; u < KEYS; ++u) sc[u] += __shfl_xor_sync(0xffffffffu, sc[u], o);
      }
      float mn = m[g];
#pragma unroll
      for (int u = 0; u < KEYS; ++u) {
        sc[u] = has[u] ? cap_score(sc[u], cap_log2) : kNoScore;
        mn = fmaxf(mn, sc[u]);
      }
      const float corr = exp2f(m[g] - mn);
      l[g] *= corr;
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[g][j] *= corr;
#pragma unroll
      for (int u = 0; u < KEYS; ++u) {
        const float e = has[u] ? exp2f(sc[u] - mn) : 0.f;
        float vf[8];
        if constexpr (kEager) {
#pragma unroll
          for (int j = 0; j < 8; ++j) vf[j] = vfe[u][j];
        } else {
          unpack8(vr[u], vf);
        }
        l[g] += e;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] += e * vf[j];
      }
      m[g] = mn;
    }
  }
  // Merge the lane groups of this warp (lanes with equal sl hold the same dims).
#pragma unroll
  for (int o = kLanesPerKey; o < 32; o *= 2) {
#pragma unroll
    for (int g = 0; g < kMaxG; ++g) {
      if (g >= ng) continue;
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float mn = fmaxf(m[g], mo);
      const float ca = exp2f(m[g] - mn), cb = exp2f(mo - mn);
      l[g] = l[g] * ca + lo * cb;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[g][j], o);
        acc[g][j] = acc[g][j] * ca + ao * cb;
      }
      m[g] = mn;
    }
  }
  // Merge warps through shared memory: warp w's lanes 0..kLanesPerKey-1 hold its state.
  __shared__ float s_acc[kWarps][kMaxG][HD];
  __shared__ float s_m[kWarps][kMaxG], s_l[kWarps][kMaxG];
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < kMaxG; ++g) {
      if (g >= ng) continue;
      if (dims) {
#pragma unroll
        for (int j = 0; j < 8; ++j) s_acc[warp][g][sl * 8 + j] = acc[g][j];
      }
      if (sl == 0) {
        s_m[warp][g] = m[g];
        s_l[warp][g] = l[g];
      }
    }
  }
  __syncthreads();
  const bool direct = arrivals && valid == 1;  // the only partition: no partials, no merge
  for (int e = threadIdx.x; e < ng * HD; e += blockDim.x) {
    const int g = e / HD, d = e % HD;
    float mx = kNoScore;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w][g]);
    float o = 0.f, lsum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float c = exp2f(s_m[w][g] - mx);
      o += s_acc[w][g][d] * c;
      lsum += s_l[w][g] * c;
    }
    if (direct) {
      out[(int64_t(t) * n_heads + head0 + g) * HD + d] = __float2bfloat16_rn(o / lsum);
      continue;
    }
    float* dst = scratch + ((int64_t(item) * n_heads + head0 + g) * n_parts + blockIdx.x) * (HD + 2);
    dst[d] = o;
    if (d == 0) {
      dst[HD] = mx;
      dst[HD + 1] = lsum;
    }
  }
  if (!arrivals || direct) return;
  // Publish the partials, count this partition in; the last of the token's partitions to
  // arrive merges them all (in partition order, so the result does not depend on which).
  __threadfence();
  __syncthreads();
  __shared__ int s_last;
  if (threadIdx.x == 0) {
    int32_t* c = arrivals + int64_t(item) * gridDim.y + blockIdx.y;
    s_last = atomicAdd(c, 1) == valid - 1;
    if (s_last) *c = 0;  // ready for the next launch (it starts after this grid ends)
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int e = threadIdx.x; e < ng * HD; e += blockDim.x) {
    const int g = e / HD, d = e % HD;
    const float* base = scratch + (int64_t(item) * n_heads + head0 + g) * n_parts * (HD + 2);
    out[(int64_t(t) * n_heads + head0 + g) * HD + d] = __float2bfloat16_rn(merge_partitions<HD>(base, valid, d));
  }
}

// Merges the partitions of each (item, head): out = sum_p o_p 2^(m_p - M) / sum_p l_p 2^(m_p - M).
template <int HD>
__global__ void decode_merge_kernel(const float* __restrict__ scratch, DevStep st, int n_heads, int window, int part,
                                    int n_parts, bf16* __restrict__ out) {
  pdl_allow_dependents();
  pdl_wait();
  const int item = blockIdx.x, h = blockIdx.y;
  const int t = st.decode_tokens[item];
  const int ctx = st.positions[t] + 1;
  const int valid = (ctx - (window > 0 ? max(0, ctx - window) : 0) + part - 1) / part;
  const float* base = scratch + (int64_t(item) * n_heads + h) * n_parts * (HD + 2);
  for (int d = threadIdx.x; d < HD; d += blockDim.x)
    out[(int64_t(t) * n_heads + h) * HD + d] = __float2bfloat16_rn(merge_partitions<HD>(base, valid, d));
}

template <int HD, int KEYS>
auto partition_kernel(int max_g) {
  return max_g == 1   ? decode_partition_kernel<HD, 1, KEYS>
         : max_g == 2 ? decode_partition_kernel<HD, 2, KEYS>
         : max_g == 4 ? decode_partition_kernel<HD, 4, KEYS>
                      : decode_partition_kernel<HD, 8, KEYS>;
}

// The last-block merge is one block per (token, kv head) walking every partition, after its own
// share; the merge kernel has a block per query head. The last-block merge wins with few
// partitions and loses badly with many (docs/notes/attention.md), so beyond this many the merge
// kernel runs.
constexpr int kLastMergeMaxParts = 16;

template <int HD>
void launch(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, const AttentionDecodePlan& p,
            int n_heads, float scale, float softcap, int window, float* scratch, int32_t* arrivals, cudaStream_t s) {
  if (!p.last_merge) arrivals = nullptr;
  dim3 grid(unsigned(p.n_parts), unsigned(kv.n_kv_heads * p.n_gchunks), unsigned(st.n_decode));
  auto kernel = p.keys == 4 ? partition_kernel<HD, 4>(p.max_g) : partition_kernel<HD, 2>(p.max_g);
  launch_pdl(kernel, grid, dim3(kWarps * 32), 0, s, q, kv.k, kv.v, st, n_heads, kv.n_kv_heads, scale * kLog2e,
             softcap * kLog2e, window, p.part, p.n_parts, scratch, arrivals, out);
  if (arrivals) return;  // merged by the last partition block
  launch_pdl(decode_merge_kernel<HD>, dim3(unsigned(st.n_decode), unsigned(n_heads)), dim3(HD), 0, s, scratch, st,
             n_heads, window, p.part, p.n_parts, out);
}

}  // namespace

bool attention_head_dim_supported(int hd) { return hd == 64 || hd == 96 || hd == 128 || hd == 256; }

AttentionDecodePlan plan_attention_decode(const DevStep& st, int n_heads, int n_kv, int head_dim, int n_sms,
                                          bool last_merge) {
  AttentionDecodePlan p;
  if (st.n_decode == 0) return p;
  const int G = n_heads / n_kv;
  p.max_g = max_g_for(G);
  p.n_gchunks = (G + p.max_g - 1) / p.max_g;
  const int64_t items = int64_t(st.n_decode) * n_kv * p.n_gchunks;
  const int64_t want_parts = std::max<int64_t>(1, (int64_t(4) * n_sms + items - 1) / std::max<int64_t>(items, 1));
  int part = int((st.max_decode_ctx + want_parts - 1) / want_parts);
  // At least 32 positions per partition: a block's loop then runs >= 1-2 rounds of loads, and
  // short contexts (the common decode case) still split over enough blocks to fill the GPU
  // (a 256-position bucket with 32 kv heads: 8 x 32 blocks) instead of 4 x 32 blocks that each
  // wait for 4 dependent rounds of K/V loads.
  part = std::max(32, (part + 31) / 32 * 32);
  p.part = part;
  p.n_parts = std::max(1, (st.max_decode_ctx + part - 1) / part);
  // 4 keys per iteration for 1-2 query heads per kv head, and for larger groups when many
  // tokens fill the GPU anyway (serving); 2 for a few long sequences with big groups, where
  // blocks per SM matter more (docs/notes/attention.md).
  p.keys = p.max_g <= 2 || st.n_decode >= 8 ? 4 : 2;
  p.last_merge = last_merge && p.n_parts <= kLastMergeMaxParts ? 1 : 0;
  p.scratch_floats = int64_t(st.n_decode) * n_heads * p.n_parts * (head_dim + 2);
  p.arrivals = p.last_merge ? int64_t(st.n_decode) * n_kv * p.n_gchunks : 0;
  return p;
}

void attention_decode(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, const AttentionDecodePlan& p,
                      int n_heads, float scale, float softcap, int window, float* scratch, int32_t* arrivals,
                      cudaStream_t s) {
  if (st.n_decode == 0) return;
  switch (kv.head_dim) {
    case 64: launch<64>(q, out, st, kv, p, n_heads, scale, softcap, window, scratch, arrivals, s); break;
    case 96: launch<96>(q, out, st, kv, p, n_heads, scale, softcap, window, scratch, arrivals, s); break;
    case 128: launch<128>(q, out, st, kv, p, n_heads, scale, softcap, window, scratch, arrivals, s); break;
    case 256: launch<256>(q, out, st, kv, p, n_heads, scale, softcap, window, scratch, arrivals, s); break;
    default:
      throw Error("cuda attention: head_dim " + std::to_string(kv.head_dim) + " not supported (64, 96, 128, 256)");
  }
}

}  // namespace greta::cuda
