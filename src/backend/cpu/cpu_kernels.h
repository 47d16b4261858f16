// Kernels of the CPU backend (internal to greta_cpu). Each is a plain function over raw
// pointers so tests and the benchmark can call it directly; cpu_backend.cpp adapts the
// Backend interface onto them.
//
// SIMD: every kernel has an AVX2 path (with AVX-512 / AVX-VNNI refinements where they pay)
// compiled when the compiler targets those ISAs (GRETA_NATIVE -> -march=native), and a
// scalar path otherwise. Both paths compute the same integer dot products, so results agree
// up to float summation order.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "runtime/batch.h"

namespace greta::cpu {

// Grow-only 64-byte-aligned scratch. Reused across ops so steady-state decode never allocates.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }
  void* get(size_t bytes) {
    if (bytes > cap_) {
      std::free(p_);
      cap_ = (bytes + 63) & ~size_t(63);
      p_ = std::aligned_alloc(64, cap_);
      if (!p_) throw std::bad_alloc();
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// Per-32-value block metadata of a quantized activation row. d and s sit side by side so a
// kernel loads both with one 64-bit load (Q4_1 needs d*dw and s*mw from the same block).
struct ActBlock {
  float d;       // scale: x[i] ~= d * q[i]
  float s;       // d * isum
  int32_t isum;  // sum of the 32 quants (for the zero-point corrections of Q4_0 / Q8_0)
  int32_t pad;
};

// Activations x [n, k] quantized to int8 in blocks of 32 (k % 32 == 0).
struct QuantActs {
  const int8_t* q = nullptr;      // [n, k]
  const ActBlock* blk = nullptr;  // [n, k/32]
  int64_t n = 0, k = 0;
};

// Quantizes x [n, k] into `scratch` (k % 32 == 0). Rows are split over the pool when n > 1.
QuantActs quantize_acts(const float* x, int64_t n, int64_t k, Scratch& scratch, ThreadPool& pool);
// One row, exposed for tests: q [k], blk [k/32].
void quantize_act_row(const float* x, int64_t k, int8_t* q, ActBlock* blk);

// A weight as the CPU keeps it: the file's bytes, rows of row_bytes(dtype, n_in).
struct WeightView {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;  // [n_out, row_bytes]
  int64_t n_out = 0, n_in = 0;
  size_t row_stride = 0;
};

// out [n, m] = x [n, k] @ w^T + bias. bias: float [m] or null.
// Quantized w: x is quantized once (into `scratch`), then integer block dot products.
void matmul(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, Scratch& scratch,
            ThreadPool& pool);
// Quantized-weight part, on already quantized activations.
void matmul_quant(const QuantActs& xa, const WeightView& w, const float* bias, float* out, ThreadPool& pool);
// Reference mode for any weight dtype: each weight row is dequantized to floats (one row at a time,
// in a per-thread buffer) and dotted with the float activations; no activation quantization.
// Several times slower than matmul_quant; used when the backend is made with exact_matmul.
void matmul_dequant(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool);
// F8_B64 / I4_G* weights (Hugging Face quantized checkpoints), on float activations.
void matmul_hf_quant(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool);
// F32 / F16 / BF16 weights.
void matmul_float(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool);

// --- elementwise (rows split over the pool when there are enough of them) ---
void rms_norm(const float* x, const float* w, float eps, float* out, int64_t n, int64_t dim, ThreadPool& pool);
void add(const float* a, const float* b, float* out, int64_t count, ThreadPool& pool);
void silu_mul(const float* gate, const float* up, float* out, int64_t count, ThreadPool& pool);
// out = gelu_tanh(gate) * up, gelu rounded through fp16 as llama.cpp's CPU backend does (about
// 1e-3 relative of the exact gelu_tanh below).
void gelu_mul(const float* gate, const float* up, float* out, int64_t count, ThreadPool& pool);
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in float, as ggml's gelu table is built.
float gelu_tanh(float x);
void scale(const float* x, float s, float* out, int64_t count, ThreadPool& pool);
// cap * tanh(x / cap) as llama.cpp computes it: tanhf(x * (1 / cap)) * cap, in float.
inline float softcap(float x, float cap) { return std::tanh(x * (1.0f / cap)) * cap; }
// out = softcap(x, cap) elementwise (Gemma 2's final logit soft-capping).
void softcap(const float* x, float cap, float* out, int64_t count, ThreadPool& pool);

// --- mixture of experts (moe.cpp) ---
// For each row of logits [n, n_experts]: softmax in fp32 (summed in double, as ggml's), then
// the k largest probabilities, largest first, equal ones by lower expert id, a NaN below every
// number; with `renormalize` divided by their sum. ids, weights [n, k].
void moe_route(const float* logits, int64_t n, int n_experts, int k, bool renormalize, int32_t* ids, float* weights);
// out[rows[j]] += weights[j] * x[j] for j < m; rows of `cols` floats.
void add_rows_scaled(const float* x, int64_t m, int64_t cols, const int32_t* rows, const float* weights, float* out);

// --- attention ---
// Paged KV of one layer: K and V pools of [n_blocks, block_size, n_kv_heads, head_dim] values of
// `dtype` (F16 by default, like llama.cpp's cache, whose arithmetic attention follows on it; BF16;
// F8_E4M3 with a float scale per (token, kv head) row: kv_rows.h). Row r = slot * n_kv_heads + head
// holds values [r * head_dim, (r + 1) * head_dim) and, for F8_E4M3, scale k_scale[r] / v_scale[r].
struct KVLayer {
  void* k = nullptr;
  void* v = nullptr;
  int block_size = 16, n_kv_heads = 0, head_dim = 0;
  DType dtype = DType::F16;
  float* k_scale = nullptr;  // F8_E4M3: [n_blocks * block_size * n_kv_heads]; else null
  float* v_scale = nullptr;
};
// cos/sin of pos * inv_freq[i] for each token: cs [n, half, 2] (cos, sin), half = head_dim/2.
// Computed once per step and reused by every layer.
void rope_tables(const int32_t* positions, int64_t n, const float* inv_freq, int half, float* cs);
// RoPE on q [n, n_heads*hd] (in place) and k [n, n_kv*hd] with the tables cs, then writes k and v
// rows into the cache at slots [n] in its element type (kv_rows.h). neox: pairs (x[i], x[i+hd/2]);
// else (x[2i], x[2i+1]).
void rope_kv_write(float* q, float* k, const float* v, int64_t n, int n_heads, const float* cs, bool neox,
                   const int32_t* slots, const KVLayer& kv, ThreadPool& pool);
// out [n, n_heads*hd] = causal softmax(scale q.k) v over each token's sequence, through the plan's
// block tables, rounding as llama.cpp's CPU backend does (see attention.cpp); window > 0: over
// the last `window` positions only (sliding-window attention); softcap > 0: each score s
// becomes softcap(s, softcap) before the softmax (Gemma 2).
void attention(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv, float* out,
               ThreadPool& pool, int window = 0, float softcap = 0.0f);

}  // namespace greta::cpu
