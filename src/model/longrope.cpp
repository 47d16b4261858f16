#include "model/longrope.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/rope_step.h"

namespace greta {

namespace {

// A list of rope_dim/2 finite numbers > 0.
std::vector<float> factor_list(const nlohmann::json& rs, const std::string& rs_name, const char* key, int n,
                               const std::string& where) {
  const std::string name = rs_name + "." + key;
  auto it = rs.find(key);
  if (it == rs.end() || !it->is_array())
    throw Error(where + ": longrope RoPE scaling needs '" + name + "' (a list of " + std::to_string(n) + " numbers)");
  if (int64_t(it->size()) != n)
    throw Error(where + ": '" + name + "' has " + std::to_string(it->size()) +
                " values, expected rope_dim/2 = " + std::to_string(n));
  std::vector<float> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const nlohmann::json& v = (*it)[size_t(i)];
    if (!v.is_number()) throw Error(where + ": '" + name + "' value " + std::to_string(i) + " must be a number");
    out[size_t(i)] = positive_finite(v.get<double>(), name + " value " + std::to_string(i), where);
  }
  return out;
}

// An optional number of `obj` (absent or null: nullopt); a present one must be a finite number > 0.
std::optional<double> positive_key(const nlohmann::json& obj, const std::string& obj_name, const char* key,
                                   const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  const std::string name = obj_name.empty() ? std::string(key) : obj_name + "." + key;
  if (!it->is_number()) throw Error(where + ": key '" + name + "' must be a number");
  return positive_finite(it->get<double>(), name, where);
}

std::vector<float> gguf_factors(const GGUFFile& g, const char* name, int n, const std::string& path) {
  const HostTensor* t = g.find_tensor(name);
  if (!t || t->dtype != DType::F32 || t->numel() != n)
    throw Error(path + ": LongRoPE needs tensor '" + std::string(name) +
                "' as F32 of rope_dim/2 = " + std::to_string(n) + " values");
  std::vector<float> out(static_cast<size_t>(n));
  std::memcpy(out.data(), t->data, out.size() * sizeof(float));
  for (int i = 0; i < n; ++i)
    positive_finite(out[size_t(i)], "tensor '" + std::string(name) + "' value " + std::to_string(i), path);
  return out;
}

}  // namespace

float longrope_default_attn_factor(double factor, int original_context) {
  if (factor <= 1.0) return 1.0f;
  return float(std::sqrt(1.0 + std::log(factor) / std::log(double(original_context))));
}

void read_hf_longrope(const nlohmann::json& rs, const std::string& rs_name, const nlohmann::json& config,
                      ModelConfig& c, const std::string& where) {
  const int n = (c.rope_dim > 0 ? c.rope_dim : c.head_dim) / 2;
  c.rope_freq_factors = factor_list(rs, rs_name, "short_factor", n, where);
  c.rope_long_freq_factors = factor_list(rs, rs_name, "long_factor", n, where);
  // transformers' Phi3Config keeps original_max_position_embeddings at the top level (default
  // 4096) and gives it priority over the scaling object's.
  auto omp = positive_key(config, "", "original_max_position_embeddings", where);
  std::string omp_key = "original_max_position_embeddings";
  if (!omp) {
    omp = positive_key(rs, rs_name, "original_max_position_embeddings", where);
    omp_key = rs_name + ".original_max_position_embeddings";
  }
  c.rope_original_context = omp ? positive_context_size(*omp, omp_key, where) : 4096;
  // factor: the scaling object's, else max_position_embeddings / original (Phi-3's convention).
  const double factor =
      positive_key(rs, rs_name, "factor", where).value_or(double(c.max_context) / double(c.rope_original_context));
  const auto attn = positive_key(rs, rs_name, "attention_factor", where);
  c.rope_attn_factor = attn ? float(*attn) : longrope_default_attn_factor(factor, c.rope_original_context);
}

void read_gguf_longrope(const GGUFFile& g, ModelConfig& c, const std::string& path) {
  if (!g.find_tensor("rope_factors_long.weight")) return;
  const int n = (c.rope_dim > 0 ? c.rope_dim : c.head_dim) / 2;
  c.rope_long_freq_factors = gguf_factors(g, "rope_factors_long.weight", n, path);
  c.rope_freq_factors = gguf_factors(g, "rope_factors_short.weight", n, path);
  const std::string a = c.arch + ".rope.scaling.";
  const auto orig = g.get_int(a + "original_context_length");
  if (!orig)
    throw Error(path + ": LongRoPE factors need " + a + "original_context_length (the pretrained context length)");
  c.rope_original_context = positive_context_size(double(*orig), a + "original_context_length", path);
  if (auto af = g.get_float(a + "attn_factor")) {
    c.rope_attn_factor = positive_finite(*af, a + "attn_factor", path);
  } else {
    c.rope_attn_factor = longrope_default_attn_factor(double(c.max_context) / double(c.rope_original_context),
                                                      c.rope_original_context);
  }
}

bool rope_step_uses_long(const ModelConfig& c, const Batch& b) {
  return !c.rope_long_freq_factors.empty() && rope_step_length(b) > c.rope_original_context;
}

}  // namespace greta
