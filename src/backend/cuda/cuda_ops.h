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

#include "backend/device_sample_params.h"
#include "core/dtype.h"

namespace greta::cuda {

using bf16 = __nv_bfloat16;

// ---- gemv.cu: out = x @ w^T (+ bias) for few tokens, bandwidth-bound ----
constexpr int kGemvMaxTokens = 32;
// out [n, m] = x [n, k] @ w [m, k]^T + bias [m] (bias may be null). Any n >= 1, m, k: the
// tensor-core streaming kernel when n <= 32 and k % 8 == 0 with 16-byte aligned rows (tokens
// in tiles of 8, every weight read once for all of them), a simple fallback otherwise (correct,
// not fast). pipeline: as GemvArgs::pipeline.
void gemv(const bf16* x, const bf16* w, const float* bias, bf16* out, int n, int64_t m, int64_t k, int pipeline,
          cudaStream_t s);
// True when the tensor-core kernel takes this shape (n <= 32, k % 8 == 0, 16-byte aligned
// x and w); gemv_fused requires it for x and every segment's w.
bool gemv_fast_path(const void* x, const void* w, int n, int64_t k);

// Decode GEMV with its neighbours fused in (see gemv.cu). Every field is plain data compared
// by bytes when a step is recorded into a graph, so the struct has no padding.
struct GemvSeg {
  const bf16* w = nullptr;      // [m, k]
  const float* bias = nullptr;  // [m] or null
  bf16* out = nullptr;          // [n, m]
  int64_t m = 0;                // 0: segment unused
};
// RoPE + KV-cache write in the q/k/v GEMV's epilogue (GemvArgs::rope, seg0 = q, seg1 = k,
// seg2 = v): q and k rows are rotated at the tokens' positions and k, v are stored at their
// cache slots -- what rope_kv_write does, without its kernel.
struct GemvRope {
  const int32_t* positions = nullptr;  // [n] token positions (DevStep::positions)
  const int32_t* slots = nullptr;      // [n] cache slots (DevStep::slot)
  const float* inv_freq = nullptr;     // [head_dim / 2]
  bf16* k_cache = nullptr;             // this layer's pools [n_blocks * block_size, n_kv * head_dim]
  bf16* v_cache = nullptr;
  int32_t head_dim = 0;  // 0: no RoPE epilogue; else a multiple of 16
  int32_t neox = 0;      // pairs (i, i + hd/2) instead of (2i, 2i + 1)
};
struct GemvArgs {
  const bf16* x = nullptr;  // [n, k]
  int64_t k = 0;
  GemvSeg seg0, seg1, seg2;        // up to 3 matrices sharing x (q, k, v), one launch
  int64_t blk1 = 0, blk2 = 0;      // set by gemv_fused: first block of seg1 / seg2
  int32_t n = 0;                   // tokens, 1..kGemvMaxTokens
  int32_t accumulate = 0;          // 1: out += result (residual add)
  int32_t swiglu = 0;              // 1: seg0.out = silu(x @ seg0.w^T) * (x @ seg1.w^T); seg1.out unused
  int16_t split = 1;               // 2: split-K over 2 blocks per row tile (plain/add epilogues, no norm;
                                   // packed weights: one token's int8 dot products, k <= kGemvDotMaxK)
  int16_t pipeline = 1;            // 1: weight stream software-pipelined, first loads before the PDL wait
  GemvRope rope;                   // rope.head_dim > 0: the RoPE epilogue above
  float* split_scratch = nullptr;  // split > 1: [row tiles, split, 128 * token tiles] partial sums
  int32_t* split_count = nullptr;  // split > 1: [row tiles] arrivals, zero between launches
  // An RMSNorm split between two GEMVs (Backend::NormedRows, gemv_kernel.cuh kNormPre):
  const float* norm_ss = nullptr;      // consumer: [k / 16][kGemvMaxTokens] sums of squares of x's
                                       // 16-row tiles; x is already x * norm weight (k % 16 == 0)
  const float* next_norm_w = nullptr;  // producer (accumulate): the next norm's weight [m]
  bf16* next_h = nullptr;              // producer: [n, m] out * next_norm_w, or null
  float* next_ss = nullptr;            // producer: [m / 16][kGemvMaxTokens] per-tile sums of out^2
  // Storage of every segment's w: BF16 ([m, k] rows) or a GGUF format kept packed (quant_planes.h).
  int32_t wfmt = int32_t(DType::BF16);
  // 1: a one-token GEMV over GGUF block-format weights quantizes x to int8 per 32 values
  // and takes dp4a dot products (quant_planes.h int8_dot_format); other formats and steps ignore it.
  int32_t int8_x = 0;
};
// The longest row the int8 dot products take (gemv_dot.cuh: its int8 copy of x fits a block's
// 48 KiB of shared memory without opting in, next to the kernel's reduction arrays).
constexpr int64_t kGemvDotMaxK = 28672;
// Floats of split_scratch and ints of split_count a split-K GEMV of m rows and n tokens needs.
size_t gemv_split_scratch_floats(int64_t m, int n);
size_t gemv_split_counters(int64_t m);
// eps: the RMSNorm epsilon when a.norm_ss is set (a float is kept out of GemvArgs so the struct
// has a unique byte representation).
void gemv_fused(GemvArgs a, float eps, cudaStream_t s);

// ---- quant_repack.cu: GGUF formats kept packed on the device (quant_planes.h) ----
// rows x src_row_bytes of GGUF blocks (on the device) -> rows [row0, row0 + rows) of the planes of an
// [m, k] weight at dst (quant_planes(t, m, k).total bytes).
void repack_quant(DType t, const void* src, size_t src_row_bytes, int64_t rows, int64_t row0, int64_t m, int64_t k,
                  void* dst, cudaStream_t s);
// out [n_rows, k] bf16 = rows of the packed [m, k] weight w: ids[i] (device [n_rows]), or row0 + i when ids is null.
void dequant_rows(DType t, const void* w, int64_t m, int64_t k, const int32_t* ids, int64_t row0, int64_t n_rows,
                  bf16* out, cudaStream_t s);

// ---- fp8_acts.cu: around the FP8 tensor-core GEMM (LtGemm::run_fp8) ----
// For the packed F8_B64 weight w [m, k]: row_scale[r] = row r's scale where all of its 64-value
// blocks share one; *mixed (device, zeroed by the caller) += the rows where they do not.
void f8_row_scales(const void* w, int64_t m, int64_t k, float* row_scale, int32_t* mixed, cudaStream_t s);
// x [n, k] (k % 16 == 0) -> q [n, k] e4m3 = x / scale[i] per token, scale [n] = amax / 448.
void quantize_tokens_e4m3(const bf16* x, int64_t n, int64_t k, uint8_t* q, float* scale, cudaStream_t s);

// ---- elementwise.cu ----
void add(const bf16* a, const bf16* b, bf16* out, int64_t count, cudaStream_t s);  // out may alias
void silu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t count, cudaStream_t s);
void add_bias_rows(bf16* out, const float* bias, int64_t n, int64_t m, cudaStream_t s);  // out[i,j] += bias[j]
void bf16_to_f32(const bf16* x, float* out, int64_t count, cudaStream_t s);

// ---- gelu_mul.cu: Gemma's GeGLU activation, embedding scale and final-logit soft-cap ----
void gelu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t count, cudaStream_t s);  // gelu_tanh(gate) * up
void scale(const bf16* x, float factor, bf16* out, int64_t count, cudaStream_t s);          // out = x * factor
void softcap(const bf16* x, float cap, bf16* out, int64_t count, cudaStream_t s);           // cap * tanh(x / cap)

// ---- rms_norm.cu: out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, in fp32 ----
void rms_norm(const bf16* x, const float* w, float eps, bf16* out, int64_t n, int64_t dim, cudaStream_t s);

// ---- embed.cu: out[j] = table[idx[j]] (idx on the device) ----
void gather_rows(const bf16* table, const int32_t* idx, bf16* out, int64_t n, int64_t cols, cudaStream_t s);

// ---- bandwidth.cpp: 1 GiB device-to-device copy, best of 5, (read + written) bytes / s / 1e9 ----
double measure_copy_bandwidth_gbs(cudaStream_t s);

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
  const int32_t* positions = nullptr;      // [n_tokens]
  const int32_t* token_seq = nullptr;      // [n_tokens]
  const int32_t* slot = nullptr;           // [n_tokens]
  const int32_t* block_begin = nullptr;    // [n_seqs + 1]
  const int32_t* block_ids = nullptr;      // [block_begin[n_seqs]]
  const int32_t* seq_len = nullptr;        // [n_seqs]
  const int32_t* decode_tokens = nullptr;  // [n_decode] token indices for the decode kernel
  const int32_t* prefill_seqs = nullptr;   // [n_prefill][3]: seq, first token, token count
  int n_tokens = 0, n_seqs = 0, block_size = 16;
  int n_decode = 0, max_decode_ctx = 0;       // longest context among decode tokens
  int n_prefill = 0, max_prefill_tokens = 0;  // most new tokens among prefill sequences
  int unused_ = 0;                            // fills the tail padding: step graphs compare launch arguments by bytes
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
void rope_kv_write(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, const DevStep& st,
                   const KVLayerDev& kv, cudaStream_t s);
// As rope_kv_write, each q and k head first RMS-normalized (Qwen3): q_norm, k_norm fp32 [head_dim].
void rope_kv_write_headnorm(bf16* q, bf16* k, const bf16* v, int n_heads, const float* q_norm, const float* k_norm,
                            float eps, const float* inv_freq, bool neox, const DevStep& st, const KVLayerDev& kv,
                            cudaStream_t s);

// ---- attention_decode.cu / attention_prefill.cu ----
bool attention_head_dim_supported(int head_dim);
// The decode kernel's work split for one step, planned once per step on the host and passed
// to every layer's launch (plan apart from run, as FlashInfer does). Plain int data: launches
// are recorded and compared by their bytes.
struct AttentionDecodePlan {
  int32_t part = 0;            // context positions per partition
  int32_t n_parts = 0;         // partitions of the longest decode context
  int32_t max_g = 8;           // query heads per block (a power of two >= the GQA group, at most 8)
  int32_t n_gchunks = 0;       // blocks per kv head: ceil(group / max_g)
  int32_t keys = 4;            // keys per lane group per loop iteration: 2 or 4
  int32_t last_merge = 0;      // 1: partitions merged by the last block of each (token, kv head); 0: a second kernel
  int64_t scratch_floats = 0;  // partial results of every partition
  int64_t arrivals = 0;        // last_merge: int32 counters, zero before the first launch (kernels leave them zero)
};
// last_merge: whether the last-block merge may be used (it is, when the partitions are few).
AttentionDecodePlan plan_attention_decode(const DevStep& st, int n_heads, int n_kv_heads, int head_dim, int n_sms,
                                          bool last_merge);
// scratch [plan.scratch_floats]; arrivals [plan.arrivals] (null when !plan.last_merge). window > 0:
// a token at position p attends positions p - window + 1 .. p only (a sliding window); 0: all.
// softcap > 0 (Gemma 2): each score s = scale q.k becomes softcap tanh(s / softcap); 0: none.
void attention_decode(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv,
                      const AttentionDecodePlan& plan, int n_heads, float scale, float softcap, int window,
                      float* scratch, int32_t* arrivals, cudaStream_t s);
// attention_prefill_tc.cu: the same on tensor cores (FlashAttention-2 style), head_dim 64 or 128.
bool attention_prefill_tc_supported(int head_dim);
// Once per device before the first launch (its shared memory is past the 48 KB default); not a
// stream operation, so it stays out of captured steps.
void attention_prefill_tc_setup();
void attention_prefill_tc(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
                          float softcap, int window, cudaStream_t s);
void attention_prefill(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
                       float softcap, int window, cudaStream_t s);

}  // namespace greta::cuda

namespace greta::cuda {

// ---- sample.cu: one token per row of logits, drawn on the device ----
constexpr int64_t kSampleMaxVocab = int64_t(1) << 24;  // ids fit the 24-bit field of the order key
// logits [rows, vocab]; params, tokens, probs [rows]; dist [rows, vocab] or null (the final
// distribution, for tests). All device pointers; each row's constraints sit behind params at
// its *_at offsets. biased: some row has logit_bias, which is added to logits in place.
void sample_rows(bf16* logits, int rows, int64_t vocab, const DeviceSampleParams* params, bool biased, int32_t* tokens,
                 float* probs, float* dist, cudaStream_t s);

}  // namespace greta::cuda
