// Hyper-parameters of a Llama-family model, read from GGUF metadata or HF config.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace greta {

struct ModelConfig {
  // "llama" (Llama 2/3, SmolLM, TinyLlama; Mixtral from GGUF), "mistral", "mixtral" (from HF), "qwen2", "qwen3",
  // "qwen3moe", "phi3", "gemma2", "gemma3"
  std::string arch;
  std::string name;  // human-readable, for `greta info`
  int n_layers = 0;
  int dim = 0;  // hidden size
  int n_heads = 0;
  int n_kv_heads = 0;  // < n_heads: grouped-query attention
  int head_dim = 0;    // usually dim / n_heads
  int ffn_dim = 0;     // intermediate size (of each expert in a mixture of experts)
  int vocab_size = 0;
  int max_context = 0;  // trained context length
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  // RoPE pairing: false = adjacent pairs (x[2i], x[2i+1]) as GGUF Llama weights expect
  // (llama.cpp's converter permutes Q/K rows); true = halves (x[i], x[i+d/2]) as HF checkpoints
  // and GGUF Qwen2 expect.
  bool rope_neox = false;
  // Per-frequency divisors (Llama 3.1 "llama3", linear and YaRN scaling, model/yarn.h); empty =
  // none. Size head_dim/2.
  std::vector<float> rope_freq_factors;
  // LongRoPE (Phi-3 "longrope", older "su"): rope_freq_factors are the short factors and these the
  // long ones, used by a step once a sequence in it exceeds rope_original_context tokens
  // (model/longrope.h); empty = none.
  std::vector<float> rope_long_freq_factors;
  int rope_original_context = 0;
  float rope_attn_factor = 1.0f;  // scale of RoPE's cos and sin (LongRoPE's and YaRN's attention factor)
  // Dynamic NTK (HF "dynamic"): the factor by which a step longer than max_context grows the RoPE
  // base (model/dynamic_ntk.h); 0 = none.
  float rope_dynamic_factor = 0.0f;
  // Dims of each head that RoPE rotates; 0 = head_dim. Fewer (Phi-4-mini's partial rotary): the
  // load reorders q/k rows so that greta's whole-head RoPE does it (model/partial_rotary.h), and
  // the factor lists above cover rope_dim/2 frequencies.
  int rope_dim = 0;

  bool tied_embeddings = false;  // output projection reuses token_embd
  bool qkv_bias = false;         // Qwen2
  // Sliding-window attention (Mistral v0.1): a token at position p sees the keys at positions
  // p - sliding_window + 1 .. p (itself included), as transformers' sliding-window mask;
  // 0 = every earlier position.
  int sliding_window = 0;
  // Qwen3: RMSNorm (weights q_norm / k_norm of size head_dim, eps norm_eps) over each head of
  // q and k after the projections, before RoPE.
  bool qk_norm = false;

  // Gemma 3 (docs/notes/gemma3.md):
  // Token embeddings are multiplied by this (sqrt(dim) as a float, as llama.cpp scales them).
  float embed_scale = 1.0f;
  // An RMSNorm (attn_post_norm, ffn_post_norm) of each block's output before its residual add.
  bool post_norms = false;
  // The feed-forward activation: SwiGLU silu(gate) * up, or GeGLU gelu_tanh(gate) * up.
  enum class FfnAct { SiLU, GeluTanh };
  FfnAct ffn_act = FfnAct::SiLU;
  // With sliding_window > 0: the layers that attend within it (Gemma 3: all but every 6th, the
  // global ones); empty = every layer.
  std::vector<bool> windowed_layers;
  // RoPE base of the windowed layers (Gemma 3: 10000; 0 = rope_theta). They take no
  // rope_freq_factors: llama.cpp and transformers scale only the global layers' RoPE.
  float rope_local_theta = 0.0f;
  // Attention score scale; 0 = 1/sqrt(head_dim).
  float attn_scale = 0.0f;

  // Mixture of experts (Qwen3-MoE, Mixtral; docs/notes/moe.md): every layer's feed-forward block
  // is n_experts SwiGLU experts of ffn_dim, of which a router (a [n_experts, dim] matrix, softmax
  // in fp32) picks the n_experts_used most probable per token; the block's output is the sum of
  // their outputs, each weighted by its probability, rescaled to sum 1 over the chosen experts
  // when expert_weights_norm (Mixtral always, Qwen3-MoE with norm_topk_prob). 0 = a dense model.
  int n_experts = 0;
  int n_experts_used = 0;
  bool expert_weights_norm = false;

  // Gemma 2 logit soft-capping, x -> cap * tanh(x / cap); 0 = none. attn_softcap caps the
  // attention scores (after the scale, before the softmax), final_softcap the output logits.
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;

  // The sliding window of layer l (0: it attends to every earlier position).
  int layer_window(int l) const {
    if (sliding_window <= 0) return 0;
    return windowed_layers.empty() || windowed_layers[size_t(l)] ? sliding_window : 0;
  }
  // Whether layer l rotates with rope_local_inv_freq() (a windowed layer, when rope_local_theta is set).
  bool layer_local_rope(int l) const { return rope_local_theta > 0.0f && layer_window(l) > 0; }

  // inv_freq[i] = 1 / (theta^(2i/rope_dim) * factor[i]) for i < rope_dim/2, 0 (no rotation) up
  // to head_dim/2; factor from rope_long_freq_factors when `long_factors`, else rope_freq_factors.
  std::vector<float> rope_inv_freq(bool long_factors = false) const;
  // The windowed layers' frequencies: base rope_local_theta, no factors (see layer_local_rope).
  std::vector<float> rope_local_inv_freq() const;
};

// A hyper-parameter that must be a finite number > 0 in float (RoPE theta, RMS epsilon, RoPE
// scaling factors): 0, negative or NaN values load silently and make every output NaN. Returns
// it as float; throws greta::Error "<where>: <key> = <value> (expected ...)" otherwise.
float positive_finite(double v, const std::string& key, const std::string& where);

// A context length (original_max_position_embeddings, original_context_length): a whole number
// in [1, 2^30]. Returns it; throws greta::Error "<where>: <key> = <value> (expected a positive
// size)" otherwise.
int positive_context_size(double v, const std::string& key, const std::string& where);

// Llama 3.1 rope_scaling (type "llama3") -> per-frequency divisors, as Meta defines them.
std::vector<float> llama3_rope_factors(int head_dim, float theta, float factor, float low_freq_factor,
                                       float high_freq_factor, int original_max_positions);

}  // namespace greta
