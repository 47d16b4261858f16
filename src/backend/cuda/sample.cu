// Token sampling on the GPU: one block per row of bf16 logits [rows, vocab], the same chain
// as the host Sampler (runtime/sampler.cpp) minus penalties: top-k -> top-p -> min-p ->
// temperature -> draw with a uniform u supplied by the host (so seeds stay deterministic).
//
// What it guarantees, and where it differs from the host
// - NaN logits are -inf (never drawn), +inf is the largest finite bf16 (ties, no inf-inf).
// - Greedy (temperature <= 0, or nothing drawable) is the argmax with the lowest id on ties:
//   exactly the host's token.
// - Candidate order is the host's total order (logit descending, id ascending), encoded in one
//   40-bit key per token: (ordered bf16 bits of the logit) << 24 | (2^24 - 1 - id). Top-k and
//   the top-p nucleus edge are found by radix selection over that key (8 bits a pass, counts
//   or probability mass per bin), never by sorting the vocabulary; ties at a threshold are
//   broken by id exactly as the host breaks them.
// - Probability mass is summed in 64-bit fixed point (weight * 2^38, weights in [0, 1]), so
//   every sum is exact and independent of thread order: the kernel is deterministic, and a
//   vocabulary of up to 2^24 tokens cannot overflow (2^24 * 2^38 < 2^64). A weight below
//   2^-39 of the top token's rounds to 0; the host would give it probability < 2e-12.
// - top-p uses the untempered softmax of the top-k survivors and min-p compares raw logits
//   with max + log(min_p), both as the host does; temperature applies only to the draw.
// - The draw inverts the final distribution in token-id order, not in the host's
//   logit-descending order: a different but equally valid inversion of the same
//   distribution, so for one u the device and host may pick different tokens; the set of
//   tokens that can be picked and their probabilities are the same.
// - Constraints come first, as on the host: a row's allowed-token bitmask (a grammar's) makes
//   every other token -inf inside the kernel; logit_bias is added to the logits in place by a
//   kernel before it, and the biased logit is rounded to bf16 like every logit the kernel
//   reads (the host adds in float: a bias that is not a multiple of the logit's bf16 step
//   lands on a neighbouring value).
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kKeyBits = 40;       // 16 value bits + 24 id bits
constexpr float kFixed = 0x1p38f;  // fixed-point scale of weights in [0, 1]
using u64 = unsigned long long;

struct Smem {
  u64 hw[256];       // radix pass: weight per bin
  u64 key[256];      // radix pass: a key of the bin (exact when the bin holds one element)
  unsigned hc[256];  // radix pass: element count per bin
  u64 red[32];       // block reductions and scans: one value per warp
  u64 above;         // radix pass: weight of the bins above the chosen one
  int digit;         // radix pass: the chosen bin, -1 if none
  int pick;          // draw: chosen token
  u64 pick_w;        // draw: its weight
};

// +inf -> largest finite bf16 so that logit - max stays finite; NaN -> -inf; -0 -> +0 so
// that the two zeros tie (and the lower id wins) as they do in the host's float compares.
__device__ __forceinline__ float clean(float x) {
  if (isnan(x)) return -INFINITY;
  if (isinf(x) && x > 0) return __uint_as_float(0x7F7F0000u);  // bf16 max
  if (x == 0.0f) return 0.0f;
  return x;
}
// Order-preserving map of a float to unsigned bits (larger float -> larger key).
__device__ __forceinline__ unsigned ordered(float f) {
  const unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_ordered(unsigned k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// The host's total order as one key: higher logit first, then lower id. Logits are bf16
// values, so the top 16 ordered bits hold all of the value.
__device__ __forceinline__ u64 order_key(float f, int64_t id) {
  return (u64(ordered(f) >> 16) << 24) | u64(0xFFFFFF - uint32_t(id));
}
// The logit of a key. The low 16 ordered bits dropped by order_key are 0 for a positive bf16
// value and all ones for a negative one (ordered() complements negatives).
__device__ __forceinline__ float key_value(u64 k) {
  unsigned o = unsigned(k >> 24) << 16;
  if (!(o & 0x80000000u)) o |= 0xFFFFu;
  return from_ordered(o);
}
__device__ __forceinline__ int32_t key_id(u64 k) { return int32_t(0xFFFFFF - uint32_t(k & 0xFFFFFF)); }
__device__ __forceinline__ u64 fixed_weight(float w) { return __float2ull_rn(w * kFixed); }

struct Sum {
  __device__ u64 operator()(u64 a, u64 b) const { return a + b; }
};
struct Max {
  __device__ u64 operator()(u64 a, u64 b) const { return a > b ? a : b; }
};

// Every thread gets the reduction of v over the block. identity: op's neutral value.
template <class Op>
__device__ u64 block_reduce(u64 v, Op op, u64 identity, Smem& sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the previous reduction's readers are done with sm.red
  if (lane == 0) sm.red[warp] = v;
  __syncthreads();
  u64 r = lane < int(blockDim.x >> 5) ? sm.red[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) r = op(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}

// Exclusive prefix sum of v over threads in thread order; *total gets the sum of all.
__device__ u64 block_exclusive_scan(u64 v, u64* total, Smem& sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  __syncthreads();
  if (lane == 31) sm.red[warp] = incl;
  __syncthreads();
  const int nw = int(blockDim.x >> 5);
  u64 w = lane < nw ? sm.red[lane] : 0, wincl = w;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 t = __shfl_up_sync(0xffffffffu, wincl, o);
    if (lane >= o) wincl += t;
  }
  const u64 warp_excl = __shfl_sync(0xffffffffu, wincl - w, warp);
  *total = __shfl_sync(0xffffffffu, wincl, 31);
  return warp_excl + incl - v;
}

// Warp 0: the bin (walking from the highest) where the running weight, starting at `above`,
// first reaches `target`. Lane l owns bins 255-8l .. 248-8l.
template <bool kUnit>
__device__ void pick_bin(u64 above, u64 target, Smem& sm) {
  const int lane = threadIdx.x;
  auto W = [&](int d) -> u64 { return kUnit ? u64(sm.hc[d]) : sm.hw[d]; };
  u64 s = 0;
  for (int j = 0; j < 8; ++j) s += W(255 - 8 * lane - j);
  u64 incl = s;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  const bool mine = above + incl - s < target && above + incl >= target;
  if (mine) {
    u64 acc = above + incl - s;
    for (int j = 0; j < 8; ++j) {
      const int d = 255 - 8 * lane - j;
      if (acc + W(d) >= target) {
        sm.digit = d;
        sm.above = acc;
        break;
      }
      acc += W(d);
    }
  }
  if (__ballot_sync(0xffffffffu, mine) == 0 && lane == 0) sm.digit = -1;
}

// Adds this lane's element (bin d, weight w, key k; d < 0: none) to the histogram. Logits
// crowd into few bins (the first pass sees a handful of exponents), and shared-memory atomics
// on one address serialize, so lanes of a warp that share a bin add once: counts through
// __match_any_sync, weights through a warp sum when every lane with an element shares one bin
// (the common case in later passes, where few elements match the prefix), else lane by lane.
template <bool kUnit>
__device__ __forceinline__ void hist_add(int d, u64 w, u64 k, Smem& sm) {
  const int lane = threadIdx.x & 31;
  const unsigned peers = __match_any_sync(0xffffffffu, d);
  if (d >= 0 && lane == __ffs(peers) - 1) {
    atomicAdd(&sm.hc[d], unsigned(__popc(peers)));
    sm.key[d] = k;  // a benign race between warps: read only when the bin holds one element
  }
  if (kUnit) return;
  const unsigned with = __ballot_sync(0xffffffffu, d >= 0);
  if (!with) return;
  const int d0 = __shfl_sync(0xffffffffu, d, __ffs(with) - 1);
  if (__all_sync(0xffffffffu, d < 0 || d == d0)) {
    u64 v = d >= 0 ? w : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0 && v) atomicAdd(&sm.hw[d0], v);
  } else if (d >= 0 && w) {
    atomicAdd(&sm.hw[d], w);
  }
}

// Radix selection over order keys: returns T such that, over the elements elem() admits,
// weight(key > T) < target <= weight(key >= T), i.e. keeping keys >= T is exactly the prefix
// of the host's candidate order that a walk accumulating weights stops at. kUnit: every
// weight is 1 (top-k; only counts are kept). The result is the crossing element's exact key,
// except when kUnit and a whole bin is kept, where it is the bin's lowest possible key (same
// kept set). Returns 0 (keep everything) if target exceeds the total weight.
template <bool kUnit, class Elem>
__device__ u64 radix_select(int64_t n, u64 target, Elem elem, Smem& sm) {
  u64 prefix = 0, above = 0;
  for (int shift = kKeyBits - 8; shift >= 0; shift -= 8) {
    __syncthreads();  // everyone has read the previous pass's result
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sm.hc[b] = 0;
      sm.hw[b] = 0;
    }
    __syncthreads();
    // Warp-uniform loop (every lane runs every iteration) so the warp can merge its updates.
    for (int64_t base = 0; base < n; base += blockDim.x) {
      const int64_t i = base + threadIdx.x;
      u64 k = 0, w = 0;
      const bool in = i < n && elem(i, k, w) && (k >> (shift + 8)) == prefix;
      hist_add<kUnit>(in ? int(k >> shift) & 255 : -1, w, k, sm);
    }
    __syncthreads();
    if (threadIdx.x < 32) pick_bin<kUnit>(above, target, sm);
    __syncthreads();
    const int d = sm.digit;
    if (d < 0) return 0;
    prefix = (prefix << 8) | u64(d);
    above = sm.above;
    if (sm.hc[d] == 1) return sm.key[d];
    if (kUnit && above + sm.hc[d] == target) return prefix << shift;
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const bf16* __restrict__ logits, int64_t vocab, const DeviceSampleParams* __restrict__ params,
                  int32_t* __restrict__ tokens, float* __restrict__ probs, float* __restrict__ dist) {
  __shared__ Smem sm;
  const int row = blockIdx.x;
  const bf16* x = logits + int64_t(row) * vocab;  // [vocab]
  float* drow = dist ? dist + int64_t(row) * vocab : nullptr;
  const DeviceSampleParams P = params[row];
  const uint32_t* allowed = P.allowed_at ? reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(params) +
                                                                             P.allowed_at)
                                         : nullptr;
  auto logit = [&](int64_t i) {
    if (allowed && !((allowed[i >> 5] >> (i & 31)) & 1u)) return -INFINITY;
    return clean(__bfloat162float(x[i]));
  };

  // Pass 1: the best key (argmax, lowest id on ties) and the number of drawable candidates.
  u64 best = 0, n_cand = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float f = logit(i);
    const u64 k = order_key(f, i);
    best = k > best ? k : best;
    n_cand += f != -INFINITY;
  }
  best = block_reduce(best, Max{}, 0, sm);
  n_cand = block_reduce(n_cand, Sum{}, 0, sm);
  const int32_t argmax = key_id(best);

  if (!(P.temperature > 0.0f) || n_cand == 0) {  // greedy, or nothing drawable (host: the same)
    if (drow)
      for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) drow[i] = i == argmax ? 1.0f : 0.0f;
    if (threadIdx.x == 0) {
      tokens[row] = argmax;
      probs[row] = 1.0f;
    }
    return;
  }
  const float mx = key_value(best);

  // top-k: keep keys >= tk (0 keeps every candidate).
  u64 tk = 0;
  if (P.top_k > 0 && u64(P.top_k) < n_cand) {
    tk = radix_select<true>(
        vocab, u64(P.top_k),
        [&](int64_t i, u64& k, u64& w) {
          const float f = logit(i);
          k = order_key(f, i);
          w = 1;
          return f != -INFINITY;
        },
        sm);
  }
  // Untempered weight of a top-k survivor (0 if not one): the host's top-p probabilities.
  // exp in double, as on the host: where the nucleus ends depends on sums of these, and float
  // exp's relative error (~1e-7) would move the edge against the host's now and then; the
  // fixed-point rounding (2^-39 a token) keeps the sums within ~1e-9 of the host's.
  auto topk_weight = [&](int64_t i, u64& k, u64& w) {
    const float f = logit(i);
    k = order_key(f, i);
    if (f == -INFINITY || k < tk) return false;
    w = __double2ull_rn(exp(double(f) - double(mx)) * double(kFixed));
    return true;
  };
  // top-p: the shortest prefix of the survivors whose mass reaches top_p of their total.
  u64 tp = 0;
  if (P.top_p < 1.0f) {
    u64 z = 0;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      u64 k, w;
      if (topk_weight(i, k, w)) z += w;
    }
    z = block_reduce(z, Sum{}, 0, sm);
    u64 target = u64(ceil(double(P.top_p) * double(z)));
    target = target < 1 ? 1 : (target > z ? z : target);
    tp = radix_select<false>(vocab, target, topk_weight, sm);
  }
  const u64 keep = tk > tp ? tk : tp;
  // min-p: p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p), compared as the host does.
  const double min_thr = P.min_p > 0.0f ? double(mx) + log(double(P.min_p)) : -INFINITY;
  const double inv_t = 1.0 / double(P.temperature);
  // Tempered weight of a final survivor, 0 for everything else.
  auto final_weight = [&](int64_t i) -> u64 {
    const float f = logit(i);
    if (f == -INFINITY || order_key(f, i) < keep || double(f) < min_thr) return 0;
    return fixed_weight(expf(float((double(f) - double(mx)) * inv_t)));
  };

  // The draw, in token-id order: each thread owns a contiguous range of ids; an exact
  // (integer) scan of the range sums finds the range holding the u-quantile, and its owner
  // walks it. The top token has weight 2^38, so the total is never 0.
  const int64_t per = (vocab + blockDim.x - 1) / blockDim.x;
  const int64_t lo = int64_t(threadIdx.x) * per, hi = lo + per < vocab ? lo + per : vocab;
  u64 mine = 0;
  for (int64_t i = lo; i < hi; ++i) mine += final_weight(i);
  if (threadIdx.x == 0) {
    sm.pick = argmax;  // stands if nothing below is found (cannot happen with exact sums)
    sm.pick_w = 0;
  }
  u64 total = 0;
  const u64 before = block_exclusive_scan(mine, &total, sm);
  double u = P.u;
  if (!(u >= 0.0)) u = 0.0;
  u64 xq = u64(u * double(total));
  if (xq >= total) xq = total - 1;
  if (mine > 0 && before <= xq && xq < before + mine) {
    u64 acc = before;
    for (int64_t i = lo; i < hi; ++i) {
      const u64 w = final_weight(i);
      acc += w;
      if (xq < acc) {
        sm.pick = int(i);
        sm.pick_w = w;
        break;
      }
    }
  }
  __syncthreads();
  if (drow)
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) drow[i] = float(double(final_weight(i)) / double(total));
  if (threadIdx.x == 0) {
    tokens[row] = sm.pick;
    probs[row] = sm.pick_w ? float(double(sm.pick_w) / double(total)) : 1.0f;
  }
}

// logit_bias of row blockIdx.x, in place: ids are distinct (the host checked), so no two
// threads write one logit.
__global__ void logit_bias_kernel(bf16* __restrict__ logits, int64_t vocab,
                                  const DeviceSampleParams* __restrict__ params) {
  const DeviceSampleParams P = params[blockIdx.x];
  if (P.n_bias <= 0) return;
  const char* base = reinterpret_cast<const char*>(params);
  const auto* ids = reinterpret_cast<const int32_t*>(base + P.bias_ids_at);
  const auto* values = reinterpret_cast<const float*>(base + P.bias_values_at);
  bf16* x = logits + int64_t(blockIdx.x) * vocab;
  for (int j = threadIdx.x; j < P.n_bias; j += blockDim.x)
    x[ids[j]] = __float2bfloat16_rn(__bfloat162float(x[ids[j]]) + values[j]);
}

}  // namespace

void sample_rows(bf16* logits, int rows, int64_t vocab, const DeviceSampleParams* params, bool biased, int32_t* tokens,
                 float* probs, float* dist, cudaStream_t s) {
  if (rows <= 0) return;
  if (vocab < 1 || vocab > kSampleMaxVocab)
    fail("sample_rows: vocab " + std::to_string(vocab) + " out of range", __FILE__, __LINE__);
  if (biased) {
    logit_bias_kernel<<<unsigned(rows), 256, 0, s>>>(logits, vocab, params);
    GRETA_CUDA_LAUNCH_CHECK();
  }
  sample_kernel<<<unsigned(rows), kThreads, 0, s>>>(logits, vocab, params, tokens, probs, dist);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace greta::cuda
