// The Llama-family forward pass, written once against backend.h.
// One call runs one step: a ragged Batch (many sequences, prompt and decode tokens mixed)
// over the paged KV cache, returning logits for Batch::logit_rows.
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/model_file.h"
#include "runtime/sampler.h"

namespace greta {

struct LayerWeights {
  std::unique_ptr<Weight> attn_norm;                      // [1, dim]
  std::unique_ptr<Weight> wq, wk, wv;                     // [n_heads*hd, dim], [n_kv*hd, dim] x2
  std::unique_ptr<Weight> bq, bk, bv;                     // [1, ...] (Qwen2) or null
  std::unique_ptr<Weight> q_norm, k_norm;                 // [1, head_dim] (Qwen3) or null
  std::unique_ptr<Weight> wo;                             // [dim, n_heads*hd]
  std::unique_ptr<Weight> ffn_norm;                       // [1, dim]
  std::unique_ptr<Weight> w_gate, w_up;                   // [ffn, dim]
  std::unique_ptr<Weight> w_down;                         // [dim, ffn]
  std::unique_ptr<Weight> attn_post_norm, ffn_post_norm;  // [1, dim] (Gemma 3) or null
  // A mixture-of-experts layer (ModelConfig::n_experts > 0) has these in place of w_gate, w_up
  // and w_down: the router [n_experts, dim] and each expert's gate, up [ffn, dim] and down [dim, ffn].
  std::unique_ptr<Weight> router;
  std::vector<std::array<std::unique_ptr<Weight>, 3>> experts;
  std::vector<Backend::Expert> expert_ops;  // the same weights as Backend::moe_ffn_add takes them

  // Every weight slot of the layer but the experts', the null ones (absent optional weights) included.
  std::array<const std::unique_ptr<Weight>*, 17> all() const {
    return {&attn_norm,    &wq, &wk,       &wv,     &bq,     &bk,   &bv,     &q_norm,
            &k_norm,       &wo, &ffn_norm, &router, &w_gate, &w_up, &w_down, &attn_post_norm,
            &ffn_post_norm};
  }
};

class LlamaModel {
 public:
  // Uploads every weight of `file` to `backend`. The file must outlive the model
  // (the CPU backend uses weights straight from the file mapping).
  LlamaModel(const ModelFile& file, Backend& backend);
  ~LlamaModel();
  // Throws greta::Error when `be` lacks an op a model of config `c` needs (logit soft-capping,
  // the expert ops), naming both; the constructor checks it first. A caller may check a
  // synthetic shape's config before making its weights.
  static void check_backend(const ModelConfig& c, const Backend& be);

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }

  // KV storage for n_blocks blocks of block_size tokens, all layers.
  std::unique_ptr<KVStorage> make_kv(int n_blocks, int block_size) const;

  // Bytes of weights one decode step of one token reads (every layer weight, the final norm and
  // output projection; one embedding row is negligible; of a mixture of experts, the
  // n_experts_used experts a token runs, at the experts' mean size), in the backend's stored formats.
  size_t weight_bytes_per_token() const;
  // Memory every weight takes on the backend (device memory on a GPU), the embedding included.
  size_t weight_bytes_on_backend() const;
  // How the backend stores the layers' matrices (the first feed-forward matrix's format).
  DType matmul_dtype() const {
    const LayerWeights& L = layers_.front();
    return (L.w_gate ? L.w_gate : L.experts.front()[0])->dtype;
  }

  // Where a step's result goes: the logits themselves, copied to host memory, or one token per
  // logit row drawn on the device (Backend::sample), so only ids and probabilities come back.
  struct HostLogits {
    float* logits;  // host [batch.logit_rows.size(), vocab]
  };
  struct DeviceDraw {
    const std::vector<DeviceSampleParams>& per_row;  // [logit_rows.size()]: logit row i's settings
    int32_t* tokens;                                 // host [logit_rows.size()]
    float* probs;                                    // host [logit_rows.size()]: each token's probability
    // Runs after the logits are computed and before per_row is read, so the caller can fill in
    // what it computed while the step ran (the requests' token masks). May be empty.
    std::function<void()> before_draw = {};
  };
  using StepOutput = std::variant<HostLogits, DeviceDraw>;

  // Runs the step over the batch and delivers its result to `output`. A DeviceDraw throws
  // greta::Error on a backend that cannot sample (Backend::supports_device_sampling).
  void forward(const Batch& batch, KVStorage& kv, const StepOutput& output);

 private:
  struct Scratch;
  void ensure_scratch(int n_tokens, int n_logits);
  // The RoPE table of a step: LongRoPE's long set or dynamic NTK's grown base where the step's
  // length asks for them (model/longrope.h, model/dynamic_ntk.h), else the model's one.
  const RopeSpec& step_rope(const Batch& batch);
  float attn_scale() const;  // the attention score scale
  // The step's logits [rows, vocab] to where `output` says: drawn on the device, or to the host.
  void deliver(Tensor logits, const StepOutput& output);
  // The end of a block: x += a @ w^T, with Gemma's norm of that result before the add when the
  // block has one (post_norm), then the next block's normed input (next_norm) or, after the
  // last block (next_norm null), nothing.
  Backend::NormedRows block_output(Tensor a, const Weight& w, const Weight* post_norm, Tensor x,
                                   const Weight* next_norm, Tensor h);

  ModelConfig cfg_;
  Backend& be_;
  RopeSpec rope_;
  RopeSpec rope_long_;     // LongRoPE's long factors (model/longrope.h); unused without them
  RopeSpec rope_local_;    // the windowed layers' own base (ModelConfig::layer_local_rope)
  RopeSpec rope_dynamic_;  // dynamic NTK's table for rope_dynamic_length_ tokens
  int64_t rope_dynamic_length_ = 0;
  std::unique_ptr<Weight> tok_embd_;  // [vocab, dim]
  std::unique_ptr<Weight> out_norm_;  // [1, dim]
  std::unique_ptr<Weight> output_;    // [vocab, dim] or null (tied: tok_embd_)
  std::vector<LayerWeights> layers_;
  std::unique_ptr<Scratch> s_;
  // The model as Backend::decode_step takes it, when it has the plain Llama form; else none.
  std::optional<DecodeModel> decode_model_;
};

// The device-sampling settings of `s` for its next token, drawing the uniform from its
// generator when the draw needs one (temperature > 0), as Sampler::sample would.
// Only for a sampler with s.device_eligible().
DeviceSampleParams device_sample_params(Sampler& s);

}  // namespace greta
