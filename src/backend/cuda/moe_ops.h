// Host-side launchers of the mixture-of-experts kernels (moe.cu): the router's logits, the
// softmax top-k routing and the per-expert grouping of a step's tokens, the expert GEMVs that
// read only the experts the step chose (their ids read from device memory), and the weighted add
// of the experts' outputs into the residual stream. Every argument is plain data, so the
// launches can be recorded into a step's CUDA graph (step_recorder.h). docs/notes/moe.md, "CUDA".
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace greta::cuda {

using bf16 = __nv_bfloat16;

// The router kernel keeps a token's probabilities in registers (8 per lane of a warp) and the
// experts' weights are picked by the k largest of them (at most one per lane).
constexpr int kMoeMaxExperts = 256;
constexpr int kMoeMaxTopK = 32;

// A step's routing in device memory, for n tokens and P = n * k (token, choice) pairs. Pairs are
// grouped by expert: the pairs of expert e sit at [offsets[e], offsets[e] + counts[e]) of the
// grouped order, in token order; used[0 .. *n_used) lists the experts with pairs, in id order.
struct MoeRouting {
  int32_t* ids = nullptr;         // [P] expert of pair t * k + j: token t's j-th choice
  float* weights = nullptr;       // [P] its weight (renormalised when asked)
  int32_t* pos = nullptr;         // [P] where pair t * k + j sits in the grouped order
  int32_t* pair_token = nullptr;  // [P] grouped order -> token
  int32_t* counts = nullptr;      // [n_experts]
  int32_t* offsets = nullptr;     // [n_experts + 1]
  int32_t* used = nullptr;        // [n_experts]
  int32_t* n_used = nullptr;      // [1]
};

// logits [n, n_experts] fp32 = h [n, d] @ router [n_experts, d]^T (d % 8 == 0, 16-byte aligned).
void moe_router_logits(const bf16* h, const bf16* router, float* logits, int64_t n, int n_experts, int64_t d,
                       cudaStream_t s);
// For each row of logits [n, n_experts] (fp32, or bf16 when logits_bf16): softmax in fp32, the k
// largest probabilities, largest first, equal ones lower id first, NaN below every number, divided
// by their sum when renormalize -- Backend::moe_route's contract -- into r.ids and r.weights.
// group: also r.pos, r.pair_token, r.counts, r.offsets, r.used, r.n_used. One block.
void moe_route(const void* logits, int logits_bf16, int64_t n, int n_experts, int k, int renormalize, int group,
               MoeRouting r, cudaStream_t s);

// Per-expert weight tables of one layer: device arrays of n_experts pointers each.
struct MoeExpertTables {
  const bf16* const* gate = nullptr;  // [n_experts] -> [f, d]
  const bf16* const* up = nullptr;    // [n_experts] -> [f, d]
  const bf16* const* down = nullptr;  // [n_experts] -> [d, f]
};
// The chosen experts' matrices, grouped: for each used expert, its pairs' rows (at most
// max_slots used experts; max_slots >= min(P, n_experts)). d % 8 == 0, f % 8 == 0.
// hidden [P, f] (grouped order) = silu(h[token] @ gate^T) * (h[token] @ up^T)
void moe_expert_gate_up(const bf16* h, MoeExpertTables t, MoeRouting r, bf16* hidden, int64_t f, int64_t d,
                        int max_slots, cudaStream_t s);
// out [P, d] (grouped order) = hidden @ down^T
void moe_expert_down(const bf16* hidden, MoeExpertTables t, MoeRouting r, bf16* out, int64_t f, int64_t d,
                     int max_slots, cudaStream_t s);
// x[t] += sum over j of weights[t * k + j] * out[pos[t * k + j]]    x [n, d], out [P, d]
void moe_combine(const bf16* out, MoeRouting r, bf16* x, int64_t n, int k, int64_t d, cudaStream_t s);
// out[rows[j]] += weights[j] * x[j] for j < m, in j order (rows may repeat)   x [m, cols]
void add_rows_scaled(const bf16* x, const int32_t* rows, const float* weights, bf16* out, int64_t m, int64_t cols,
                     cudaStream_t s);

}  // namespace greta::cuda
