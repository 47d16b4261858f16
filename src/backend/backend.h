// The op interface the model calls. The Llama forward (model/llama.cpp) is written once
// against this; backends decide how. The model never branches on device.
//
// Conventions
// - Activations are row-major 2-D Tensors [rows, cols] in backend memory, of the backend's
//   activation dtype (act_dtype(): F32 on CPU, BF16/F16 on CUDA). A row is one token.
// - A Weight is [n_out, n_in] row-major in the format the backend chose at upload
//   (CPU keeps GGUF blocks as they are; CUDA repacks). 1-D weights (norms, biases) are [1, n].
// - Ops run in stream order; to_host() waits for the result.
// - Ops never allocate per call beyond what the backend caches (scratch for quantized
//   activations, step metadata).
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "backend/device_sample_params.h"
#include "core/host_tensor.h"
#include "runtime/batch.h"

namespace greta {

struct Tensor {  // non-owning view of backend memory
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;

  size_t row_stride_bytes() const { return row_bytes(dtype, cols); }
  Tensor rows_slice(int64_t r0, int64_t n) const {
    Tensor t = *this;
    t.data = static_cast<uint8_t*>(data) + size_t(r0) * row_stride_bytes();
    t.rows = n;
    return t;
  }
};

// A weight after upload. Backends subclass it to hold their storage.
class Weight {
 public:
  virtual ~Weight() = default;
  DType dtype = DType::F32;  // format as stored on the backend
  int64_t n_out = 0;         // rows
  int64_t n_in = 0;          // cols
  size_t bytes = 0;          // memory it takes on the backend (device memory on a GPU)
};

// Paged KV cache storage: per layer, K and V pools of
// [n_blocks, block_size, n_kv_heads, head_dim]. Slot s = block*block_size + offset.
// Element types: F16, BF16, or F8_E4M3 with a float scale per (token, kv head) row of head_dim
// values (docs/notes/kv-cache-fp8.md).
struct KVCacheDesc {
  int n_layers = 0;
  int n_blocks = 0;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;

  // Bytes one token takes in one layer, K and V, with elements of type kv (scales included).
  size_t token_layer_bytes(DType kv) const {
    const size_t row = size_t(head_dim) * block_bytes(kv) + (kv == DType::F8_E4M3 ? sizeof(float) : 0);
    return 2 * size_t(n_kv_heads) * row;
  }
  // Bytes one block takes, all layers: what a memory budget is divided by.
  size_t bytes_per_block(DType kv) const { return size_t(n_layers) * size_t(block_size) * token_layer_bytes(kv); }
};
class KVStorage {
 public:
  virtual ~KVStorage() = default;
  KVCacheDesc desc;
  DType dtype = DType::F32;  // element type of the K/V pools (Backend::kv_dtype())
};

struct RopeSpec {
  std::vector<float> inv_freq;  // [head_dim/2]
  bool neox = false;            // see ModelConfig::rope_neox
};

// A decoder of the plain Llama form, for backends that run a whole decode step as one launch
// (Backend::decode_step): pre-norm RMSNorm blocks, q/k/v without biases or head norms, RoPE, full
// attention with no soft-capping, a SwiGLU feed-forward, a final RMSNorm and the output projection.
struct DecodeModel {
  struct Layer {
    const Weight *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
  };
  std::vector<Layer> layers;
  const Weight* out_norm = nullptr;
  const Weight* output = nullptr;  // the output projection (or the tied token embedding)
  int n_heads = 0;
  float eps = 0.0f;         // RMSNorm epsilon
  float attn_scale = 0.0f;  // attention score scale
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
  virtual DType act_dtype() const = 0;

  // --- memory ---
  virtual Tensor alloc(int64_t rows, int64_t cols) = 0;  // act_dtype(); freed by free()
  virtual void free(Tensor& t) = 0;
  virtual std::unique_ptr<Weight> upload(const HostTensor& w) = 0;  // 1-D or 2-D
  virtual std::unique_ptr<KVStorage> alloc_kv(const KVCacheDesc& d) = 0;
  // The element type alloc_kv stores K and V in (chosen when the backend is made: --kv-dtype).
  virtual DType kv_dtype() const = 0;

  // --- step ---
  // Called once per forward before any op that reads positions/slots/block tables.
  virtual void begin_step(const StepPlan& plan) = 0;

  // --- ops (x/out shapes as [rows, cols]) ---
  // out[i] = table[tokens[i]]   tokens: host [n]; out [n, dim]
  virtual void embed(const Weight& table, const int32_t* tokens, int n, Tensor out) = 0;
  // out = x / rms(x) * w        x, out [n, dim]; w [1, dim]; out may alias x
  virtual void rms_norm(Tensor x, const Weight& w, float eps, Tensor out) = 0;
  // RMSNorm of each head: x [n, n_heads*head_dim] as n*n_heads rows of head_dim, each scaled by
  // w [1, head_dim], in place (Qwen3's q/k norm). The default is rms_norm over that view.
  virtual void head_rms_norm(Tensor x, const Weight& w, float eps) {
    const int64_t hd = w.n_out * w.n_in;
    if (hd <= 0 || x.cols % hd != 0)
      throw Error("head_rms_norm: row of " + std::to_string(x.cols) + " values is not whole heads of " +
                  std::to_string(hd));
    Tensor heads = x;
    heads.rows = x.rows * (x.cols / hd);
    heads.cols = hd;
    rms_norm(heads, w, eps, heads);
  }
  // out = x @ w^T (+ bias)      x [n, k]; w [m, k]; bias [1, m] or null; out [n, m]
  virtual void matmul(Tensor x, const Weight& w, const Weight* bias, Tensor out) = 0;
  // out = a + b                 same shapes; out may alias a or b
  virtual void add(Tensor a, Tensor b, Tensor out) = 0;
  // out = silu(gate) * up       same shapes; out may alias gate or up
  virtual void silu_mul(Tensor gate, Tensor up, Tensor out) = 0;
  // out = gelu(gate) * up       GeGLU with the tanh approximation,
  //   gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))); shapes as silu_mul
  virtual void gelu_mul(Tensor gate, Tensor up, Tensor out) = 0;
  // out = x * s                 same shapes; out may alias x
  virtual void scale(Tensor x, float s, Tensor out) = 0;
  // Applies RoPE at the step's positions to q [n, n_heads*head_dim] (in place) and to
  // k [n, n_kv_heads*head_dim], then writes k and v [n, n_kv_heads*head_dim] into the
  // cache of `layer` at the step's slots.
  virtual void rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) = 0;
  // Causal attention of each token over its sequence's cache positions [0, pos], or with
  // window > 0 (sliding-window attention) over [pos - window + 1, pos]:
  // q [n, n_heads*head_dim] -> out [n, n_heads*head_dim]; scale = 1/sqrt(head_dim).
  // softcap > 0 (Gemma 2; only where supports_logit_softcapping()): each score s = scale q.k is
  // replaced by softcap * tanh(s / softcap) before the softmax.
  virtual void attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out, int window = 0,
                         float softcap = 0.0f) = 0;

  // --- fused ops ---
  // Each default composes the plain ops above, so a backend without the fusion (CPU) gives
  // exactly what the separate calls give; CUDA overrides them for decode-sized steps to save
  // kernels and passes over the activations (docs/notes/fusion.md). Every fusion is visible in
  // the model's forward: no op changes what it does depending on the op that follows it.
  struct MatmulTarget {
    const Weight* w = nullptr;     // [m, k]
    const Weight* bias = nullptr;  // [1, m] or null
    Tensor out;                    // [n, m]
  };
  // The input of the matmuls that follow an RMSNorm, handed from the op that produced it (norm
  // or matmul_add_norm) to the one that consumes it (the normed_* ops). Two forms:
  // - plain: h = rms_norm(x) * w, split_ss null;
  // - split (a fusing backend's matmul_add_norm): h = x * w and split_ss holds the sums of squares
  //   of x's rows in that backend's own partial layout; the consumer finishes the norm (scales
  //   its results by 1/rms). Valid until the next matmul_add_norm, which reuses that memory.
  // A consumer that cannot take the split form recomputes the plain one from x, w and eps
  // (Backend::normed_rows), so every consumer takes either form.
  struct NormedRows {
    Tensor x;                   // [n, k] the rows that were normalized (residual stream)
    const Weight* w = nullptr;  // [1, k] the norm's scale
    float eps = 0;
    Tensor h;                         // [n, k] see above
    const float* split_ss = nullptr;  // split form: backend-owned partial sums; else null
  };
  // h = rms_norm(x) * w, as the input of normed_* ops. x, h [n, k]; h must not alias x.
  virtual NormedRows norm(Tensor x, const Weight& w, float eps, Tensor h) {
    rms_norm(x, w, eps, h);
    return NormedRows{x, &w, eps, h, nullptr};
  }
  // x += a @ w^T, then the next norm's input over the new x: the residual add at the end of a
  // block and the RMSNorm that starts the next one. a [n, k]; w [m, k]; x, h [n, m]; h is also
  // scratch. a and h must not alias x.
  virtual NormedRows matmul_add_norm(Tensor a, const Weight& w, Tensor x, const Weight& next_norm, float eps,
                                     Tensor h) {
    matmul_add(a, w, h, x);
    return norm(x, next_norm, eps, h);
  }
  // out = h @ w^T (+ bias) for each target. No out may alias in.x or in.h.
  virtual void normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets) {
    const Tensor h = normed_rows(in);
    for (const MatmulTarget& t : targets) matmul(h, *t.w, t.bias, t.out);
  }
  // Attention input: q, k, v = h @ w^T (+ bias), then rope_kv_write(q, k, v, rope, kv, layer) --
  // RoPE on q and k, k and v into the cache. Shapes as in normed_matmul and rope_kv_write.
  virtual void normed_qkv_rope(const NormedRows& in, const MatmulTarget& q, const MatmulTarget& k,
                               const MatmulTarget& v, const RopeSpec& rope, KVStorage& kv, int layer) {
    normed_matmul(in, {q, k, v});
    rope_kv_write(q.out, k.out, v.out, rope, kv, layer);
  }
  // Qwen3's attention input: q, k, v = h @ w^T (+ bias), then head_rms_norm of q with q_norm and
  // of k with k_norm (each [1, head_dim]), then rope_kv_write. Shapes as in normed_qkv_rope.
  virtual void normed_qkv_headnorm_rope(const NormedRows& in, const MatmulTarget& q, const MatmulTarget& k,
                                        const MatmulTarget& v, const Weight& q_norm, const Weight& k_norm, float eps,
                                        const RopeSpec& rope, KVStorage& kv, int layer) {
    normed_matmul(in, {q, k, v});
    head_rms_norm(q.out, q_norm, eps);
    head_rms_norm(k.out, k_norm, eps);
    rope_kv_write(q.out, k.out, v.out, rope, kv, layer);
  }
  // SwiGLU feed-forward input: out = silu(h @ w_gate^T) * (h @ w_up^T). w_gate, w_up [m, k];
  // gate, out [n, m]; gate is scratch (a fusing backend may never write it).
  virtual void normed_swiglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out) {
    normed_gated(in, w_gate, w_up, gate, out, &Backend::silu_mul);
  }
  // GeGLU feed-forward input: out = gelu(h @ w_gate^T) * (h @ w_up^T); as normed_swiglu.
  virtual void normed_geglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out) {
    normed_gated(in, w_gate, w_up, gate, out, &Backend::gelu_mul);
  }
  // x += a @ w^T                a [n, k]; w [m, k]; x [n, m]; tmp [n, m] is scratch.
  virtual void matmul_add(Tensor a, const Weight& w, Tensor tmp, Tensor x) {
    matmul(a, w, nullptr, tmp);
    add(x, tmp, x);
  }

  // out[j] = x[rows[j]]         rows: host [m]; out [m, cols]
  virtual void gather_rows(Tensor x, const std::vector<int32_t>& rows, Tensor out) = 0;
  // Copies x (any act dtype) to host floats, waiting for all prior work.
  virtual void to_host(Tensor x, float* dst) = 0;

  // The device's own memory bandwidth in GB/s as the benchmark protocol defines it (a large
  // device-to-device copy, bytes read + written); 0 where not measured (CPU).
  virtual double measure_bandwidth_gbs() { return 0.0; }

  // --- optional: logit soft-capping (Gemma 2) ---
  // When true, attention() takes a softcap and softcap() caps the output logits; a model that
  // needs them is refused at load on a backend without them.
  virtual bool supports_logit_softcapping() const { return false; }
  // out = cap * tanh(x / cap)   same shapes; out may alias x
  virtual void softcap(Tensor x, float cap, Tensor out) {
    throw Error("backend " + name() + " does not implement logit soft-capping (check supports_logit_softcapping())");
  }

  // --- optional: mixture-of-experts feed-forward (Qwen3-MoE, Mixtral; docs/notes/moe.md) ---
  // When true, moe_route and add_rows_scaled run (and so moe_ffn_add's default); a model with
  // experts is refused at load on a backend without them.
  virtual bool supports_moe() const { return false; }
  // The router's choice for each row of logits [n, n_experts]: the softmax of the row in fp32,
  // then its k largest probabilities, largest first (equal ones: the lower expert id first),
  // divided by their sum when `renormalize`. ids, weights: host [n * k], row-major; waits for the
  // result like to_host.
  virtual void moe_route(Tensor logits, int k, bool renormalize, int32_t* ids, float* weights) {
    throw Error("backend " + name() + " does not implement the expert router (check supports_moe())");
  }
  // out[rows[j]] += weights[j] * x[j]    x [m, cols]; rows, weights: host [m]; out [*, cols]
  virtual void add_rows_scaled(Tensor x, const std::vector<int32_t>& rows, const std::vector<float>& weights,
                               Tensor out) {
    throw Error("backend " + name() + " does not implement add_rows_scaled (check supports_moe())");
  }
  // Shapes below: d the model width, f an expert's intermediate size, n the step's tokens.
  struct Expert {                  // one expert's SwiGLU matrices
    const Weight* gate = nullptr;  // [f, d]
    const Weight* up = nullptr;    // [f, d]
    const Weight* down = nullptr;  // [d, f]
  };
  struct MoeScratch {  // each at least n rows
    Tensor logits;     // [n, n_experts]
    Tensor rows;       // [n, d]  one expert's tokens, gathered
    Tensor gate, up;   // [n, f]
    Tensor out;        // [n, d]
  };
  // The mixture-of-experts block added into the residual stream: for each row t of h (the normed
  // input), x[t] += sum over the top_k experts e that moe_route picks from h @ router^T of
  // weight_e * down_e(silu(gate_e h[t]) * up_e h[t]). router [n_experts, d]; x [n, d].
  // The default routes on the host and runs each chosen expert's matmuls once over the tokens
  // that chose it (gathered), so a step reads each chosen expert's weights once; a GPU backend
  // would override it whole, routing on the device.
  virtual void moe_ffn_add(const NormedRows& in, const Weight& router, const std::vector<Expert>& experts, int top_k,
                           bool renormalize, const MoeScratch& s, Tensor x) {
    if (router.n_out != int64_t(experts.size()) || top_k < 1 || size_t(top_k) > experts.size())
      throw Error("moe_ffn_add: router of " + std::to_string(router.n_out) + " rows for " +
                  std::to_string(experts.size()) + " experts, top " + std::to_string(top_k));
    const Tensor h = normed_rows(in);
    const int64_t n = h.rows;
    const Tensor logits = s.logits.rows_slice(0, n);
    matmul(h, router, nullptr, logits);
    std::vector<int32_t> ids(size_t(n) * top_k);
    std::vector<float> w(ids.size());
    moe_route(logits, top_k, renormalize, ids.data(), w.data());
    std::vector<std::vector<int32_t>> tokens(experts.size());  // per expert: its tokens, in order
    std::vector<std::vector<float>> weights(experts.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || size_t(ids[i]) >= experts.size())
        throw Error("moe_ffn_add: backend " + name() + " routed to expert " + std::to_string(ids[i]) + " of " +
                    std::to_string(experts.size()));
      tokens[size_t(ids[i])].push_back(int32_t(i / size_t(top_k)));
      weights[size_t(ids[i])].push_back(w[i]);
    }
    for (size_t e = 0; e < experts.size(); ++e) {
      const int64_t m = int64_t(tokens[e].size());
      if (m == 0) continue;
      const Tensor xe = s.rows.rows_slice(0, m), g = s.gate.rows_slice(0, m), u = s.up.rows_slice(0, m),
                   o = s.out.rows_slice(0, m);
      gather_rows(h, tokens[e], xe);
      matmul(xe, *experts[e].gate, nullptr, g);
      matmul(xe, *experts[e].up, nullptr, u);
      silu_mul(g, u, u);
      matmul(u, *experts[e].down, nullptr, o);
      add_rows_scaled(o, tokens[e], weights[e], x);
    }
  }

  // --- optional: a decode step as one launch ---
  // Runs m's layers, final norm and output projection for a step of decode tokens (begin_step's
  // plan: one new token per sequence, every token a logit row): x [n, dim] holds the embedded
  // tokens (afterwards: the final residual stream), logits [n, vocab] receives the logits. False
  // when the backend does not take this step that way (not supported, switched off, or a shape it
  // does not take): then nothing ran, and the caller runs the ops.
  virtual bool decode_step(const DecodeModel& m, const RopeSpec& rope, KVStorage& kv, Tensor x, Tensor logits) {
    return false;
  }

  // --- optional: sampling on the device ---
  // When true, sample() draws one token per row of logits [rows, vocab] with per_row[r]'s
  // settings and writes tokens_out[r] and probs_out[r] (the token's probability in the final
  // distribution) to host memory, waiting for the result like to_host: a step then returns
  // rows ids instead of rows * vocab logits. Backends without it (CPU) keep the host Sampler.
  // Steps of at least this many tokens may multiply some weights with activations quantized to
  // FP8 (e4m3 W8A8: CUDA prefill and large batches); fewer never do; 0: no step does. Results then differ between step
  // sizes by that rounding, not only by summation order.
  virtual int fp8_activation_min_tokens() const { return 0; }
  // Steps of at most this many tokens may multiply some weights with activations quantized to
  // int8 per 32 values (CUDA one-token steps over GGUF block formats, and batched ones on the int8
  // GEMM, as llama.cpp does); 0: none does. Results then differ between step sizes by that rounding too.
  virtual int int8_activation_max_tokens() const { return 0; }
  virtual bool supports_device_sampling() const { return false; }
  virtual void sample(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out,
                      float* probs_out) {
    throw Error("backend " + name() + " does not sample on the device (check supports_device_sampling())");
  }

 protected:
  // in.h in the plain form: a split-form input gets its norm recomputed from in.x into in.h.
  Tensor normed_rows(const NormedRows& in) {
    if (in.split_ss) rms_norm(in.x, *in.w, in.eps, in.h);
    return in.h;
  }
  // The gated feed-forward input with the activation `act` (silu_mul, gelu_mul) of the two matmuls.
  void normed_gated(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out,
                    void (Backend::*act)(Tensor, Tensor, Tensor)) {
    const Tensor h = normed_rows(in);
    matmul(h, w_gate, nullptr, gate);
    matmul(h, w_up, nullptr, out);
    (this->*act)(gate, out, out);
  }
};

}  // namespace greta
