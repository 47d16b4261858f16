// Host-side launchers of the CUDA kernels, one group per .cu file. Plain C++ (compiled by
// the host compiler too): cuda_backend.cpp and the GPU tests call these; the kernels stay
// private to their .cu files. All launches are asynchronous on the given stream and checked.
//
// Activations are bf16 row-major [rows, cols]; weights are bf16 [m, k] row-major (repacked
// at upload), 1-D weights (norm scales, biases) are f32 [m].
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace greta::cuda {

using bf16 = __nv_bfloat16;

// ---- gemv.cu: out = x @ w^T (+ bias) for few tokens, bandwidth-bound ----
constexpr int kGemvMaxTokens = 8;
// out [n, m] = x [n, k] @ w [m, k]^T + bias [m] (bias may be null). Any n >= 1, m, k: the
// tensor-core streaming kernel when n <= 8 and k % 8 == 0 with 16-byte aligned rows, a
// simple fallback otherwise (correct, not fast).
void gemv(const bf16* x, const bf16* w, const float* bias, bf16* out, int n, int64_t m, int64_t k,
          cudaStream_t s);
// Explicit variants for the benchmark: unroll = 2/4/8 register loads in flight per row per lane,
// 104/108 = cp.async pipeline of 4/8 stages.
void gemv_variant(int unroll, const bf16* x, const bf16* w, const float* bias, bf16* out, int n,
                  int64_t m, int64_t k, cudaStream_t s);

// ---- elementwise.cu ----
void add(const bf16* a, const bf16* b, bf16* out, int64_t count, cudaStream_t s);      // out may alias
void silu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t count, cudaStream_t s);
void add_bias_rows(bf16* out, const float* bias, int64_t n, int64_t m, cudaStream_t s);  // out[i,j] += bias[j]
void bf16_to_f32(const bf16* x, float* out, int64_t count, cudaStream_t s);

// ---- rms_norm.cu: out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, in fp32 ----
void rms_norm(const bf16* x, const float* w, float eps, bf16* out, int64_t n, int64_t dim, cudaStream_t s);

// ---- embed.cu: out[j] = table[idx[j]] (idx on the device) ----
void gather_rows(const bf16* table, const int32_t* idx, bf16* out, int64_t n, int64_t cols, cudaStream_t s);

// ---- convert.cu: n_values of a weight (plain or GGUF blocks, on the device) -> bf16 ----
bool convert_supported(DType t);
void convert_to_bf16(DType t, const void* src, bf16* dst, int64_t n_values, cudaStream_t s);

}  // namespace greta::cuda

namespace greta::cuda {

// The step's metadata in device memory (see StepPlan), uploaded once per step by
// CudaBackend::begin_step, plus the attention work split computed on the host there:
// sequences with few new tokens go to the split-K decode kernel (one work item per token),
// the others to the tiled prefill kernel (one item per sequence).
struct DevStep {
  const int32_t* positions = nullptr;    // [n_tokens]
  const int32_t* token_seq = nullptr;    // [n_tokens]
  const int32_t* slot = nullptr;         // [n_tokens]
  const int32_t* block_begin = nullptr;  // [n_seqs + 1]
  const int32_t* block_ids = nullptr;    // [block_begin[n_seqs]]
  const int32_t* seq_len = nullptr;      // [n_seqs]
  const int32_t* decode_tokens = nullptr;  // [n_decode] token indices for the decode kernel
  const int32_t* prefill_seqs = nullptr;   // [n_prefill][3]: seq, first token, token count
  int n_tokens = 0, n_seqs = 0, block_size = 16;
  int n_decode = 0, max_decode_ctx = 0;       // longest context among decode tokens
  int n_prefill = 0, max_prefill_tokens = 0;  // most new tokens among prefill sequences
  int unused_ = 0;  // fills the tail padding: step graphs compare launch arguments by bytes
};

// One layer of the paged cache: k, v [n_blocks, block_size, n_kv_heads, head_dim].
struct KVLayerDev {
  bf16* k = nullptr;
  bf16* v = nullptr;
  int n_blocks = 0, block_size = 16, n_kv_heads = 0, head_dim = 0;
};

// ---- rope_kv.cu ----
// q [n, n_heads*hd] and k [n, n_kv*hd] rotated in place at the step's positions; k and
// v [n, n_kv*hd] written to the cache at the step's slots. inv_freq [hd/2] on the device.
void rope_kv_write(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox,
                   const DevStep& st, const KVLayerDev& kv, cudaStream_t s);

// ---- attention_decode.cu / attention_prefill.cu ----
bool attention_head_dim_supported(int head_dim);
// Floats of scratch the decode kernel needs for this step (partials of every partition).
size_t attention_decode_scratch_floats(const DevStep& st, int n_heads, int head_dim, int n_kv_heads, int n_sms);
void attention_decode(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
                      float* scratch, int n_sms, cudaStream_t s);
void attention_prefill(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
                       cudaStream_t s);

}  // namespace greta::cuda

namespace greta::cuda {

// ---- sample.cu: one token per row of logits, drawn on the device ----
// Per-row settings as DeviceSampleParams (backend.h) describes them; u in [0, 1).
struct SampleRowParams {
  float temperature = 0;  // <= 0: greedy
  int top_k = 0;          // <= 0: off
  float top_p = 1;        // (0, 1]; 1: off
  float min_p = 0;        // [0, 1]; 0: off
  double u = 0;
};
constexpr int64_t kSampleMaxVocab = int64_t(1) << 24;  // ids fit the 24-bit field of the order key
// logits [rows, vocab]; params, tokens, probs [rows]; dist [rows, vocab] or null (the final
// distribution, for tests). All device pointers.
void sample_rows(const bf16* logits, int rows, int64_t vocab, const SampleRowParams* params, int32_t* tokens,
                 float* probs, float* dist, cudaStream_t s);

}  // namespace greta::cuda
