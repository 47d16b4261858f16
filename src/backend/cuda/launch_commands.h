// Launchers that take every argument by value, so a step can record them (step_recorder.h):
// the ones whose kernels' own launch functions take references or an object.
#pragma once
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/matmul_lt.h"

namespace greta::cuda {

inline void lt_gemm_cmd(LtGemm* g, const bf16* x, const bf16* w, bf16* out, int64_t n, int64_t m, int64_t k,
                        int accumulate, cudaStream_t s) {
  g->run(x, w, out, n, m, k, accumulate != 0, s);
}

inline void rope_kv_cmd(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, DevStep st,
                        KVLayerDev L, cudaStream_t s) {
  rope_kv_write(q, k, v, n_heads, inv_freq, neox, st, L, s);
}

// Decode tokens through the split-K kernel, prompt tokens through the prefill kernel (tensor
// cores where `prefill_tc` and the head size allow); each kernel skips tokens that are not its own.
inline void attention_cmd(const bf16* q, bf16* out, DevStep st, KVLayerDev L, AttentionDecodePlan plan, int n_heads,
                          float scale, float* scratch, int32_t* arrivals, int prefill_tc, cudaStream_t s) {
  attention_decode(q, out, st, L, plan, n_heads, scale, scratch, arrivals, s);
  if (prefill_tc && attention_prefill_tc_supported(L.head_dim)) attention_prefill_tc(q, out, st, L, n_heads, scale, s);
  else attention_prefill(q, out, st, L, n_heads, scale, s);
}

}  // namespace greta::cuda
