#include "model/gemma3.h"

#include <cmath>

#include "core/error.h"
#include "formats/gguf.h"

namespace greta {

namespace {

// llama.cpp's default when the file names no pattern: every 6th layer is global.
constexpr int kDefaultWindowPattern = 6;

}  // namespace

std::vector<bool> gguf_windowed_layers(const GGUFFile& g, const ModelConfig& c, const std::string& path,
                                       int default_period) {
  const std::string key = c.arch + ".attention.sliding_window_pattern";
  std::vector<bool> w(size_t(c.n_layers), true);
  if (const GGUFArray* arr = g.get_array(key)) {
    if (arr->items.size() != size_t(c.n_layers))
      throw Error(path + ": " + key + " has " + std::to_string(arr->items.size()) +
                  " entries (expected one per layer, " + std::to_string(c.n_layers) + ")");
    for (size_t l = 0; l < w.size(); ++l) {
      const std::optional<bool> b = arr->items[l].as_bool();
      if (!b) throw Error(path + ": " + key + "[" + std::to_string(l) + "] is not a boolean");
      w[l] = *b;
    }
    return w;
  }
  const int64_t p = g.get_int(key).value_or(default_period);
  if (p < 0 || p > c.n_layers)
    throw Error(path + ": " + key + " = " + std::to_string(p) + " (expected 0 .. block_count)");
  if (p > 0)
    for (size_t l = 0; l < w.size(); ++l) w[l] = (l + 1) % size_t(p) != 0;
  return w;
}

void set_gemma_layout(ModelConfig& c) {
  c.rope_neox = true;
  c.post_norms = true;
  c.ffn_act = ModelConfig::FfnAct::GeluTanh;
  c.embed_scale = std::sqrt(float(c.dim));
}

void read_gguf_gemma3(const GGUFFile& g, ModelConfig& c, const std::string& path) {
  const std::string a = c.arch + ".";
  for (const char* cap : {"final_logit_softcapping", "attn_logit_softcapping"})
    if (auto v = g.get_float(a + cap); v && *v != 0.0)
      throw Error(path + ": " + a + cap + " = " + std::to_string(*v) +
                  " (logit soft-capping is Gemma 2's; Gemma 3 files carry none)");
  set_gemma_layout(c);
  c.qk_norm = true;
  if (c.sliding_window > 0) {
    c.windowed_layers = gguf_windowed_layers(g, c, path, kDefaultWindowPattern);
    c.rope_local_theta = positive_finite(g.get_float(a + "rope.freq_base_swa").value_or(10000.0),
                                         a + "rope.freq_base_swa", path);
  }
  // The files carry no query_pre_attn_scalar: llama.cpp scales by 1/sqrt(head_dim), except for
  // the 62-layer model (Gemma 3 27B, query_pre_attn_scalar = dim / heads = 168).
  c.attn_scale = c.n_layers == 62 ? 1.0f / std::sqrt(float(c.dim / c.n_heads)) : 1.0f / std::sqrt(float(c.head_dim));
}

}  // namespace greta
