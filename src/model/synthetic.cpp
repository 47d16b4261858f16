#include "model/synthetic.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/quantize_on_load.h"

namespace greta {

namespace {

// Qwen3: q/k norms, halves RoPE, eps 1e-6. Gemma3: those plus Gemma 3's scaled embedding, post
// norms, GeGLU, a 512-token window in all but every 6th layer (local RoPE base 10k) and tied
// embeddings, as model/gemma3.h reads them from GGUF. Gemma2: Gemma 3's layout without q/k norms,
// a window in every other layer from the first, one RoPE base, and the soft caps (50, 30).
enum class Family { Llama, Qwen3, Gemma2, Gemma3 };

struct Shape {
  const char* name;
  int layers, dim, heads, kv_heads, ffn, vocab, ctx;
  float theta;
  int head_dim = 0;  // 0: dim / heads
  Family family = Family::Llama;
  bool tied = false;  // the output projection is the token embedding
  int window = 0;     // Gemma 2: the windowed layers' sliding window
  // A mixture of experts (Qwen3-MoE): experts of intermediate size `ffn`, experts_used per token,
  // their weights renormalised (norm_topk_prob); 0 = dense.
  int experts = 0, experts_used = 0;
};
constexpr Shape kShapes[] = {
    {"llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 4096, 10000.0f},
    {"llama-2-13b", 40, 5120, 40, 40, 13824, 32000, 4096, 10000.0f},
    {"llama-2-70b", 80, 8192, 64, 8, 28672, 32000, 4096, 10000.0f},
    // Phi-3-mini: head_dim 96; its fused qkv / gate_up load split, so this runs the same ops
    {"phi-3-mini", 32, 3072, 32, 32, 8192, 32064, 4096, 10000.0f},
    {"llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f},
    {"smollm2-135m", 30, 576, 9, 3, 1536, 49152, 8192, 100000.0f},
    // Llama 3.2 1B (its llama3 RoPE scaling to 131072 positions left out: same bytes and kernels)
    {"llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256, 8192, 500000.0f, 0, Family::Llama, true},
    {"tiny", 4, 512, 8, 2, 1376, 1000, 2048, 10000.0f},  // head_dim 64: every backend supports it
    // No grouping (3 kv heads for 3 q heads), head_dim 128, an odd vocabulary and tied embeddings:
    // for tests
    {"tiny-mha", 3, 384, 3, 3, 1000, 999, 2048, 10000.0f, 0, Family::Llama, true},
    {"qwen3-8b", 36, 4096, 32, 8, 12288, 151936, 40960, 1000000.0f, 128, Family::Qwen3},
    // q/k norms with head_dim 128 != dim / heads (as Qwen3-0.6B has): for tests
    {"tiny-qwen3", 4, 512, 8, 2, 1376, 1000, 2048, 1000000.0f, 128, Family::Qwen3},
    {"gemma-2-9b", 42, 3584, 16, 8, 14336, 256000, 8192, 10000.0f, 256, Family::Gemma2, true, 4096},
    // Gemma 2's layout with head_dim 256 and two windowed layers: for tests
    {"tiny-gemma2", 4, 512, 4, 2, 1376, 1000, 2048, 10000.0f, 256, Family::Gemma2, true, 512},
    {"gemma-3-1b", 26, 1152, 4, 1, 6912, 262144, 32768, 1000000.0f, 256, Family::Gemma3, true},
    // Gemma 3's layout with head_dim 256 and one global layer (the 6th): for tests
    {"tiny-gemma3", 6, 512, 4, 1, 1376, 1000, 2048, 1000000.0f, 256, Family::Gemma3, true},
    // Qwen3-30B-A3B: 128 experts of 768, 8 per token
    {"qwen3-30b-a3b", 48, 2048, 32, 4, 768, 151936, 40960, 1000000.0f, 128, Family::Qwen3, false, 0, 128, 8},
    // Qwen3-MoE's layout with 8 experts of 256, 2 per token: for tests
    {"tiny-qwen3moe", 4, 512, 8, 2, 256, 1000, 2048, 1000000.0f, 128, Family::Qwen3, false, 0, 8, 2},
};

// Counter-based generator (splitmix64): value i of tensor t is a pure function of (seed, t, i),
// so generation parallelises and is identical on every machine.
inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<std::string> synthetic_names() {
  std::vector<std::string> v;
  for (const Shape& s : kShapes) v.push_back(s.name);
  return v;
}

ModelConfig synthetic_config(const std::string& name) {
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    ModelConfig c;
    const bool gemma = s.family == Family::Gemma2 || s.family == Family::Gemma3;
    const bool qk_norm = s.family == Family::Qwen3 || s.family == Family::Gemma3;
    c.arch = s.family == Family::Qwen3    ? (s.experts > 0 ? "qwen3moe" : "qwen3")
             : s.family == Family::Gemma2 ? "gemma2"
             : s.family == Family::Gemma3 ? "gemma3"
                                          : "llama";
    c.name = "synthetic " + name;
    c.n_layers = s.layers;
    c.dim = s.dim;
    c.n_heads = s.heads;
    c.n_kv_heads = s.kv_heads;
    c.head_dim = s.head_dim ? s.head_dim : s.dim / s.heads;
    c.ffn_dim = s.ffn;
    c.vocab_size = s.vocab;
    c.max_context = s.ctx;
    c.norm_eps = qk_norm || gemma ? 1e-6f : 1e-5f;
    c.rope_theta = s.theta;
    c.rope_neox = qk_norm || gemma;
    c.qk_norm = qk_norm;
    c.tied_embeddings = s.tied;
    c.n_experts = s.experts;
    c.n_experts_used = s.experts_used;
    c.expert_weights_norm = s.experts > 0;
    if (s.family == Family::Gemma3) {
      c.embed_scale = std::sqrt(float(c.dim));
      c.post_norms = true;
      c.ffn_act = ModelConfig::FfnAct::GeluTanh;
      c.sliding_window = 512;
      for (int l = 0; l < c.n_layers; ++l) c.windowed_layers.push_back((l + 1) % 6 != 0);
      c.rope_local_theta = 10000.0f;
      c.attn_scale = 1.0f / std::sqrt(float(c.head_dim));
    }
    if (s.family == Family::Gemma2) {
      c.embed_scale = std::sqrt(float(c.dim));
      c.post_norms = true;
      c.ffn_act = ModelConfig::FfnAct::GeluTanh;
      c.sliding_window = s.window;
      for (int l = 0; l < c.n_layers; ++l) c.windowed_layers.push_back(l % 2 == 0);
      c.attn_scale = 1.0f / std::sqrt(float(c.head_dim));
      c.attn_softcap = 50.0f;
      c.final_softcap = 30.0f;
    }
    return c;
  }
  std::string names;
  for (const Shape& s : kShapes) names += std::string(names.empty() ? "" : ", ") + s.name;
  throw Error("unknown synthetic model '" + name + "' (available: " + names + ")");
}

SyntheticWeights::SyntheticWeights(const ModelConfig& c, DType dtype, uint64_t seed, int n_threads, DType keep) {
  if (!is_float_weight_type(keep))
    throw Error("synthetic weights: rows no block type fits must stay F32, F16 or BF16, not " +
                std::string(dtype_name(keep)));
  MatrixQuantizer quantizer(dtype, n_threads);  // throws for a type weights cannot be stored in
  // Expert routers stay in a float type, as llama.cpp's quantizer keeps them.
  MatrixQuantizer router_quantizer(is_quantized(dtype) ? keep : dtype, n_threads);
  // Value i of tensor number k (in the order added) is a pure function of (seed, k, i).
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool is_norm, bool router = false) {
    const uint64_t tensor_seed = mix(seed ^ mix(tensors_.size() + 1));
    if (is_norm) {  // exactly 1, F32 as in GGUF files
      const OwnedTensors::Added a = tensors_.add(name, DType::F32, std::move(shape));
      std::fill_n(reinterpret_cast<float*>(a.bytes), a.tensor->numel(), 1.0f);
      return;
    }
    const int64_t n_in = shape.back();
    const float amp = 1.0f / std::sqrt(float(n_in));
    (router ? router_quantizer : quantizer).add(tensors_, name, std::move(shape), keep, [&](int64_t row, float* x) {
      const uint64_t first = tensor_seed + uint64_t(row * n_in);
      for (int64_t i = 0; i < n_in; ++i) {  // uniform in [-amp, amp)
        const float u = float(mix(first + uint64_t(i)) >> 40) * (1.0f / 16777216.0f);
        x[i] = (2.0f * u - 1.0f) * amp;
      }
    });
  };
  const int64_t q = int64_t(c.n_heads) * c.head_dim, kv = int64_t(c.n_kv_heads) * c.head_dim;
  add("token_embd.weight", {c.vocab_size, c.dim}, false);
  add("output_norm.weight", {c.dim}, true);
  if (!c.tied_embeddings) add("output.weight", {c.vocab_size, c.dim}, false);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {c.dim}, true);
    add(p + "attn_q.weight", {q, c.dim}, false);
    add(p + "attn_k.weight", {kv, c.dim}, false);
    add(p + "attn_v.weight", {kv, c.dim}, false);
    add(p + "attn_output.weight", {c.dim, q}, false);
    if (c.qk_norm) {
      add(p + "attn_q_norm.weight", {c.head_dim}, true);
      add(p + "attn_k_norm.weight", {c.head_dim}, true);
    }
    add(p + "ffn_norm.weight", {c.dim}, true);
    if (c.n_experts > 0) {  // llama.cpp's per-expert names (ModelFile::expert_tensor)
      add(p + "ffn_gate_inp.weight", {c.n_experts, c.dim}, false, /*router=*/true);
      for (int e = 0; e < c.n_experts; ++e) {
        std::string E = ".";  // built in steps: GCC 12 warns (-Wrestrict, falsely) on "." + to_string(e)
        E += std::to_string(e);
        E += ".weight";
        add(p + "ffn_gate" + E, {c.ffn_dim, c.dim}, false);
        add(p + "ffn_up" + E, {c.ffn_dim, c.dim}, false);
        add(p + "ffn_down" + E, {c.dim, c.ffn_dim}, false);
      }
    } else {
      add(p + "ffn_gate.weight", {c.ffn_dim, c.dim}, false);
      add(p + "ffn_up.weight", {c.ffn_dim, c.dim}, false);
      add(p + "ffn_down.weight", {c.dim, c.ffn_dim}, false);
    }
    if (c.post_norms) {
      add(p + "post_attention_norm.weight", {c.dim}, true);
      add(p + "post_ffw_norm.weight", {c.dim}, true);
    }
  }
  notes_ = quantizer.fallback_notes();
}

}  // namespace greta
