// Mixture-of-experts kernels (moe_ops.h). The expert matrices are picked on the device: a
// layer's experts are a table of weight pointers indexed by the ids the router kernel wrote, so
// a step's launches do not depend on its routing and can be replayed from a CUDA graph.
//
// The expert kernels are CUDA-core grouped GEMVs: a block owns 8 rows of one used expert (a
// warp a row; 4 rows a warp for the short down rows) and multiplies each weight row with that
// expert's pairs, 8 at a time, so every chosen expert's weights are read once a step for up to 8
// of its tokens. Launched over every slot an expert could take (min(P, n_experts)); blocks past
// the step's used experts exit.
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/moe_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kPerLane = kMoeMaxExperts / 32;  // probabilities a lane holds
constexpr int kRouterTokens = 8;               // tokens a warp multiplies each router row with
constexpr int kRowWarps = 8;                   // weight rows a block (a warp each)
constexpr int kPairTile = 8;                   // pairs a warp multiplies each weight row with at a time
// Down rows are short (f values, 1.5 KB at f = 768): a warp takes several so that blocks are not
// too small to pay for their start.
constexpr int kDownRowsPerWarp = 4;
constexpr int kSteps = 4;  // 16-byte weight loads in flight a lane and matrix

// 8 values at p (16-byte aligned); weights through the read-only path.
__device__ __forceinline__ void load8(const bf16* p, float (&f)[8]) { unpack8(*reinterpret_cast<const uint4*>(p), f); }
__device__ __forceinline__ void load8_weights(const bf16* p, float (&f)[8]) {
  unpack8(__ldg(reinterpret_cast<const uint4*>(p)), f);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// ---- router logits ----

// Block: 8 router rows (a warp each) x 8 tokens (blockIdx.y). Logits stay fp32: the top-k
// choice compares them, and bf16 logits would tie experts the fp32 reference tells apart.
__global__ void __launch_bounds__(kRowWarps * 32)
    router_logits_kernel(const bf16* __restrict__ h, const bf16* __restrict__ router, float* __restrict__ logits,
                         int64_t n, int n_experts, int64_t d) {
  pdl_allow_dependents();
  pdl_wait();  // h comes from the previous kernel (pdl.cuh)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int e = blockIdx.x * kRowWarps + warp;
  if (e >= n_experts) return;
  const int64_t t0 = int64_t(blockIdx.y) * kRouterTokens;
  const int nt = int(min(int64_t(kRouterTokens), n - t0));
  const bf16* w = router + int64_t(e) * d;
  float acc[kRouterTokens] = {};
  for (int64_t c = int64_t(lane) * 8; c < d; c += 256) {
    float wf[8];
    load8_weights(w + c, wf);
#pragma unroll
    for (int j = 0; j < kRouterTokens; ++j) {
      if (j >= nt) break;
      float xf[8];
      load8(h + (t0 + j) * d + c, xf);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[j] = fmaf(wf[i], xf[i], acc[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < kRouterTokens; ++j) {
    if (j >= nt) break;
    const float v = warp_sum(acc[j]);
    if (lane == 0) logits[(t0 + j) * n_experts + e] = v;
  }
}

// ---- routing ----

// The selection order: the larger key first, equal keys the lower expert id first.
__device__ __forceinline__ bool ranks_before(float ka, int ea, float kb, int eb) {
  return ka > kb || (ka == kb && ea < eb);
}

// Keys of the top-k selection: a probability (>= 0), NaN below every number, then taken ones,
// then the lanes' slots past n_experts.
constexpr float kKeyNan = -1.0f, kKeyTaken = -2.0f, kKeyNone = -3.0f;

// One warp a token: softmax (the sum in double, as the CPU reference), k passes of a warp
// argmax. Then, with `group`, the whole block counts the pairs per expert, scans the counts
// (warp 0) and places the pairs in grouped order, in pair order within an expert (warp 0 in
// chunks of 32, ranks from __match_any_sync), so the grouping is the same on every run.
__global__ void __launch_bounds__(1024) route_kernel(const void* logits, int logits_bf16, int64_t n, int n_experts,
                                                     int k, int renormalize, int group, MoeRouting r) {
  pdl_allow_dependents();
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  for (int64_t t = warp; t < n; t += n_warps) {
    float p[kPerLane], key[kPerLane];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      p[i] = -INFINITY;
      if (e < n_experts) {
        const int64_t at = t * n_experts + e;
        p[i] = logits_bf16 ? __bfloat162float(static_cast<const bf16*>(logits)[at])
                           : static_cast<const float*>(logits)[at];
      }
      mx = fmaxf(mx, p[i]);  // ignores NaN, as std::max(mx, NaN) keeps mx
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, o));
    double sum = 0.0;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + 32 * i < n_experts) {
        p[i] = expf(p[i] - mx);
        sum += p[i];
      }
#pragma unroll
    for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(kFull, sum, o);
    const float inv = float(1.0 / sum);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      p[i] *= inv;
      key[i] = lane + 32 * i >= n_experts ? kKeyNone : isnan(p[i]) ? kKeyNan : p[i];
    }
    float chosen = 0.0f, my_w = 0.0f;
    int my_id = 0;
    for (int j = 0; j < k; ++j) {
      float bk = kKeyNone - 1.0f, bp = 0.0f;
      int be = INT_MAX;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i)
        if (ranks_before(key[i], lane + 32 * i, bk, be)) {
          bk = key[i];
          be = lane + 32 * i;
          bp = p[i];
        }
#pragma unroll
      for (int o = 16; o; o >>= 1) {
        const float ok = __shfl_xor_sync(kFull, bk, o), op = __shfl_xor_sync(kFull, bp, o);
        const int oe = __shfl_xor_sync(kFull, be, o);
        if (ranks_before(ok, oe, bk, be)) {
          bk = ok;
          be = oe;
          bp = op;
        }
      }
#pragma unroll
      for (int i = 0; i < kPerLane; ++i)
        if (lane + 32 * i == be) key[i] = kKeyTaken;
      chosen += bp;
      if (lane == j) {
        my_w = bp;
        my_id = be;
      }
    }
    if (lane < k) {
      r.ids[t * k + lane] = my_id;
      r.weights[t * k + lane] = renormalize ? my_w / chosen : my_w;
    }
  }
  if (!group) return;

  __shared__ int cnt[kMoeMaxExperts], cur[kMoeMaxExperts];
  for (int e = threadIdx.x; e < kMoeMaxExperts; e += blockDim.x) cnt[e] = 0;
  __syncthreads();  // also makes every warp's ids above visible to the block
  const int64_t P = n * k;
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) atomicAdd(&cnt[r.ids[i]], 1);
  __syncthreads();
  if (warp == 0) {
    // Lane l scans experts [8l, 8l + 8): its totals, then an exclusive scan across lanes.
    int c[kPerLane], sum_c = 0, sum_u = 0;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane * kPerLane + i;
      c[i] = e < n_experts ? cnt[e] : 0;
      sum_c += c[i];
      sum_u += c[i] > 0;
    }
    int inc_c = sum_c, inc_u = sum_u;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int a = __shfl_up_sync(kFull, inc_c, o), b = __shfl_up_sync(kFull, inc_u, o);
      if (lane >= o) {
        inc_c += a;
        inc_u += b;
      }
    }
    int at = inc_c - sum_c, u = inc_u - sum_u;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane * kPerLane + i;
      if (e >= n_experts) break;
      r.counts[e] = c[i];
      r.offsets[e] = at;
      cur[e] = at;
      if (c[i] > 0) r.used[u++] = e;
      at += c[i];
    }
    if (lane == 31) {
      r.offsets[n_experts] = inc_c;
      *r.n_used = inc_u;
    }
    __syncwarp();
    for (int64_t base = 0; base < P; base += 32) {
      const int64_t i = base + lane;
      const int e = i < P ? r.ids[i] : -1;
      const unsigned same = __match_any_sync(kFull, e);
      const int leader = __ffs(same) - 1;
      int slot = 0;
      if (lane == leader && e >= 0) {
        slot = cur[e];
        cur[e] += __popc(same);
      }
      slot = __shfl_sync(kFull, slot, leader) + __popc(same & ((1u << lane) - 1));
      if (e >= 0) {
        r.pos[i] = slot;
        r.pair_token[slot] = int32_t(i / k);
      }
      __syncwarp();
    }
  }
}

// ---- expert matrices ----

// out [P, m] (grouped order) = x rows @ w0^T, or with DUAL silu(x @ w0^T) * (x @ w1^T); w0, w1
// [m, k] the expert's matrices from the tables. x rows: x[pair_token[q]] (the step's tokens) or,
// x_grouped, x[q] (rows already in grouped order). Sums in fp32, rounded once to bf16.
// Launch bounds of 2 blocks an SM: ptxas then keeps the kSteps loads' registers (108 with DUAL)
// instead of spilling the down kernel at 64.
template <bool DUAL, int RPW>
__global__ void __launch_bounds__(kRowWarps * 32, 2)
    expert_rows_kernel(const bf16* __restrict__ x, int x_grouped, const bf16* const* w0t, const bf16* const* w1t,
                       MoeRouting r, bf16* __restrict__ out, int64_t m, int64_t k) {
  pdl_allow_dependents();
  pdl_wait();  // the routing and x come from the previous kernels
  const int u = blockIdx.y;
  if (u >= *r.n_used) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int e = r.used[u];
  const int off = r.offsets[e], cnt = r.counts[e];
  for (int rr = 0; rr < RPW; ++rr) {
    const int64_t row = (int64_t(blockIdx.x) * RPW + rr) * kRowWarps + warp;
    if (row >= m) break;
    const bf16* __restrict__ w0 = w0t[e] + row * k;
    const bf16* __restrict__ w1 = DUAL ? w1t[e] + row * k : nullptr;
    for (int c0 = 0; c0 < cnt; c0 += kPairTile) {
      const int nt = min(kPairTile, cnt - c0);
      const bf16* xr[kPairTile];
#pragma unroll
      for (int j = 0; j < kPairTile; ++j) {
        const int q = off + c0 + min(j, nt - 1);
        xr[j] = x + int64_t(x_grouped ? q : r.pair_token[q]) * k;
      }
      float a0[kPairTile] = {}, a1[kPairTile] = {};
      // kSteps 16-byte weight loads a lane (per matrix) are issued before any of them is used, so
      // a warp keeps kSteps * 512 bytes of each row in flight.
      for (int64_t kc = int64_t(lane) * 8; kc < k; kc += 256 * kSteps) {
        uint4 ra[kSteps] = {}, rb[DUAL ? kSteps : 1] = {};
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {
          const int64_t c = kc + 256 * s;
          if (c < k) {
            ra[s] = __ldg(reinterpret_cast<const uint4*>(w0 + c));
            if constexpr (DUAL) rb[s] = __ldg(reinterpret_cast<const uint4*>(w1 + c));
          }
        }
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {
          const int64_t c = kc + 256 * s;
          if (c >= k) break;
          float wa[8], wb[8];
          unpack8(ra[s], wa);
          if constexpr (DUAL) unpack8(rb[s], wb);
#pragma unroll
          for (int j = 0; j < kPairTile; ++j) {
            if (j >= nt) break;
            float xf[8];
            load8(xr[j] + c, xf);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
              a0[j] = fmaf(wa[i], xf[i], a0[j]);
              if constexpr (DUAL) a1[j] = fmaf(wb[i], xf[i], a1[j]);
            }
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kPairTile; ++j) {
        if (j >= nt) break;
        float v = warp_sum(a0[j]);
        if (DUAL) v = v / (1.0f + expf(-v)) * warp_sum(a1[j]);
        if (lane == 0) out[int64_t(off + c0 + j) * m + row] = __float2bfloat16(v);
      }
    }
  }
}

// x[t] += the token's k expert outputs, each by its weight, summed in choice order in fp32.
__global__ void combine_kernel(const bf16* __restrict__ out, MoeRouting r, bf16* __restrict__ x, int k, int64_t d) {
  pdl_allow_dependents();
  pdl_wait();
  const int64_t t = blockIdx.y;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < d; c += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int j = 0; j < k; ++j) {
      const int64_t i = t * k + j;
      s = fmaf(r.weights[i], __bfloat162float(out[int64_t(r.pos[i]) * d + c]), s);
    }
    bf16* xp = x + t * d + c;
    *xp = __float2bfloat16(__bfloat162float(*xp) + s);
  }
}

// One thread a column, the rows in j order: repeated rows add up without races.
__global__ void add_rows_scaled_kernel(const bf16* __restrict__ x, const int32_t* __restrict__ rows,
                                       const float* __restrict__ weights, bf16* __restrict__ out, int64_t m,
                                       int64_t cols) {
  pdl_allow_dependents();
  pdl_wait();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t j = 0; j < m; ++j) {
    bf16* o = out + int64_t(rows[j]) * cols + c;
    *o = __float2bfloat16(__bfloat162float(*o) + weights[j] * __bfloat162float(x[j * cols + c]));
  }
}

}  // namespace

void moe_router_logits(const bf16* h, const bf16* router, float* logits, int64_t n, int n_experts, int64_t d,
                       cudaStream_t s) {
  if (n <= 0) return;
  const dim3 grid((n_experts + kRowWarps - 1) / kRowWarps, unsigned((n + kRouterTokens - 1) / kRouterTokens));
  launch_pdl(router_logits_kernel, grid, dim3(kRowWarps * 32), 0, s, h, router, logits, n, n_experts, d);
}

void moe_route(const void* logits, int logits_bf16, int64_t n, int n_experts, int k, int renormalize, int group,
               MoeRouting r, cudaStream_t s) {
  if (n <= 0) return;
  // One warp a token; grouping uses the whole block.
  const int threads = group ? 1024 : int(std::min<int64_t>(1024, n * 32));
  launch_pdl(route_kernel, dim3(1), dim3(unsigned(threads)), 0, s, logits, logits_bf16, n, n_experts, k, renormalize,
             group, r);
}

void moe_expert_gate_up(const bf16* h, MoeExpertTables t, MoeRouting r, bf16* hidden, int64_t f, int64_t d,
                        int max_slots, cudaStream_t s) {
  const dim3 grid(unsigned((f + kRowWarps - 1) / kRowWarps), unsigned(max_slots));
  launch_pdl(expert_rows_kernel<true, 1>, grid, dim3(kRowWarps * 32), 0, s, h, 0, t.gate, t.up, r, hidden, f, d);
}

void moe_expert_down(const bf16* hidden, MoeExpertTables t, MoeRouting r, bf16* out, int64_t f, int64_t d,
                     int max_slots, cudaStream_t s) {
  constexpr int kRows = kRowWarps * kDownRowsPerWarp;
  const dim3 grid(unsigned((d + kRows - 1) / kRows), unsigned(max_slots));
  launch_pdl(expert_rows_kernel<false, kDownRowsPerWarp>, grid, dim3(kRowWarps * 32), 0, s, hidden, 1, t.down,
             static_cast<const bf16* const*>(nullptr), r, out, d, f);
}

void moe_combine(const bf16* out, MoeRouting r, bf16* x, int64_t n, int k, int64_t d, cudaStream_t s) {
  if (n <= 0) return;
  const dim3 grid(unsigned(std::min<int64_t>(16, (d + 255) / 256)), unsigned(n));
  launch_pdl(combine_kernel, grid, dim3(256), 0, s, out, r, x, k, d);
}

void add_rows_scaled(const bf16* x, const int32_t* rows, const float* weights, bf16* out, int64_t m, int64_t cols,
                     cudaStream_t s) {
  if (m <= 0 || cols <= 0) return;
  launch_pdl(add_rows_scaled_kernel, dim3(unsigned((cols + 255) / 256)), dim3(256), 0, s, x, rows, weights, out, m,
             cols);
}

}  // namespace greta::cuda
