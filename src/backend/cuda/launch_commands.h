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

// out [n, m] (rows ldo apart) = x [n, k] @ w^T for a weight kept packed (quant_planes.h): rows
// [r0, r0 + per) at a time are dequantized into scratch [per, k] and multiplied into out's
// columns [r0, r0 + per).
inline void packed_gemm_cmd(LtGemm* g, const bf16* x, DType t, const void* w, bf16* scratch, int64_t per, bf16* out,
                            int64_t n, int64_t m, int64_t k, int accumulate, cudaStream_t s) {
  for (int64_t r0 = 0; r0 < m; r0 += per) {
    const int64_t rows = m - r0 < per ? m - r0 : per;
    dequant_rows(t, w, m, k, nullptr, r0, rows, scratch, s);
    g->run(x, scratch, out + r0, n, rows, k, accumulate != 0, s, m);
  }
}

// out [n, m] (+)= xq [n, k] @ w^T on the FP8 tensor cores, for an F8_B64 weight with one scale a row
// (CudaWeight::row_scale); x quantized per token (quantize_tokens_e4m3) into xq / x_scale [n] first.
inline void fp8_gemm_quantized_cmd(LtGemm* g, const uint8_t* xq, const float* x_scale, const uint8_t* wq,
                                   const float* w_scale, bf16* out, int64_t n, int64_t m, int64_t k, int accumulate,
                                   cudaStream_t s) {
  g->run_fp8(xq, x_scale, wq, w_scale, out, n, m, k, accumulate != 0, s);
}

inline void rope_kv_cmd(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, DevStep st,
                        KVLayerDev L, cudaStream_t s) {
  rope_kv_write(q, k, v, n_heads, inv_freq, neox, st, L, s);
}

inline void rope_kv_headnorm_cmd(bf16* q, bf16* k, const bf16* v, int n_heads, const float* q_norm, const float* k_norm,
                                 float eps, const float* inv_freq, bool neox, DevStep st, KVLayerDev L,
                                 cudaStream_t s) {
  rope_kv_write_headnorm(q, k, v, n_heads, q_norm, k_norm, eps, inv_freq, neox, st, L, s);
}

// Decode tokens through the split-K kernel, prompt tokens through the prefill kernel (tensor
// cores where `prefill_tc` and the head size allow); each kernel skips tokens that are not its own.
inline void attention_cmd(const bf16* q, bf16* out, DevStep st, KVLayerDev L, AttentionDecodePlan plan, int n_heads,
                          float scale, float softcap, int window, float* scratch, int32_t* arrivals, int prefill_tc,
                          cudaStream_t s) {
  attention_decode(q, out, st, L, plan, n_heads, scale, softcap, window, scratch, arrivals, s);
  if (prefill_tc && attention_prefill_tc_supported(L.head_dim))
    attention_prefill_tc(q, out, st, L, n_heads, scale, softcap, window, s);
  else attention_prefill(q, out, st, L, n_heads, scale, softcap, window, s);
}

}  // namespace greta::cuda
