#include "model/yarn.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "core/error.h"
#include "formats/gguf.h"

namespace greta {

namespace {

constexpr double kPi = 3.14159265358979323846;

// The (fractional) pair index that turns `rotations` times over `context` positions.
double correction_dim(double rotations, int rope_dim, double theta, int context) {
  return double(rope_dim) * std::log(double(context) / (rotations * 2.0 * kPi)) / (2.0 * std::log(theta));
}

// An optional number of `obj` (absent or null: nullopt); a present one must be a number.
std::optional<double> number_key(const nlohmann::json& obj, const std::string& obj_name, const char* key,
                                 const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  const std::string name = obj_name.empty() ? std::string(key) : obj_name + "." + key;
  if (!it->is_number()) throw Error(where + ": key '" + name + "' must be a number");
  return it->get<double>();
}

}  // namespace

std::vector<float> yarn_rope_factors(int rope_dim, double theta, const YarnParams& p) {
  double low = correction_dim(p.beta_fast, rope_dim, theta, p.original_context);
  double high = correction_dim(p.beta_slow, rope_dim, theta, p.original_context);
  if (p.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(rope_dim - 1));
  const double span = std::max(high - low, 0.001);  // llama.cpp's guard; transformers adds 0.001 when equal
  std::vector<float> out(static_cast<size_t>(rope_dim / 2));
  for (int i = 0; i < rope_dim / 2; ++i) {
    const double ramp = std::clamp((double(i) - low) / span, 0.0, 1.0);  // 0: extrapolate, 1: interpolate
    const double e = p.ext_factor * (1.0 - ramp);
    // inv_freq = b / s * (1 - e) + b * e  ->  divisor b / inv_freq
    out[size_t(i)] = float(1.0 / ((1.0 - e) / p.factor + e));
  }
  return out;
}

double yarn_mscale(double factor, double mscale) { return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0; }

void read_hf_yarn(const nlohmann::json& rs, const std::string& rs_name, ModelConfig& c, const std::string& where) {
  const int rd = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  YarnParams p;
  // transformers' standardize_rope_params: the scaling object's original_max_position_embeddings,
  // else max_position_embeddings. (A top-level key counts only for configs that declare it, of
  // which Phi3Config reads "yarn" as longrope.)
  const std::string omp_key = rs_name + ".original_max_position_embeddings";
  const auto omp = number_key(rs, rs_name, "original_max_position_embeddings", where);
  p.original_context = omp ? positive_context_size(*omp, omp_key, where) : c.max_context;
  // factor null or absent: max_position_embeddings / original (transformers' DeepSeek-V3 rule).
  const auto factor = number_key(rs, rs_name, "factor", where);
  p.factor = factor ? positive_finite(*factor, rs_name + ".factor", where)
                    : double(c.max_context) / double(p.original_context);
  // beta_fast / beta_slow: transformers takes `or 32` / `or 1`, so 0 means the default too.
  for (auto [key, dst] : {std::pair{"beta_fast", &p.beta_fast}, std::pair{"beta_slow", &p.beta_slow}}) {
    const auto v = number_key(rs, rs_name, key, where);
    if (v && *v != 0.0) *dst = positive_finite(*v, rs_name + "." + key, where);
  }
  if (auto t = rs.find("truncate"); t != rs.end() && !t->is_null()) {
    if (!t->is_boolean()) throw Error(where + ": key '" + rs_name + ".truncate' must be true or false");
    p.truncate = t->get<bool>();
  }
  c.rope_freq_factors = yarn_rope_factors(rd, c.rope_theta, p);
  if (const auto af = number_key(rs, rs_name, "attention_factor", where)) {
    c.rope_attn_factor = positive_finite(*af, rs_name + ".attention_factor", where);
    return;
  }
  // mscale and mscale_all_dim count only together and non-zero (transformers' `if mscale and
  // mscale_all_dim`): the ratio of the two magnitudes, else 0.1 ln(s) + 1.
  const auto ms = number_key(rs, rs_name, "mscale", where), msa = number_key(rs, rs_name, "mscale_all_dim", where);
  const double m = ms && msa && *ms != 0.0 && *msa != 0.0 ? yarn_mscale(p.factor, *ms) / yarn_mscale(p.factor, *msa)
                                                          : yarn_mscale(p.factor);
  c.rope_attn_factor = positive_finite(m, rs_name + " attention factor from mscale / mscale_all_dim", where);
}

void read_gguf_yarn(const GGUFFile& g, ModelConfig& c, const std::string& path) {
  const std::string a = c.arch + ".rope.scaling.";
  const int rd = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  if (g.find_tensor("rope_factors_long.weight"))
    throw Error(path + ": YaRN together with LongRoPE factor tensors (rope_factors_long) is not supported");
  if (auto lm = g.get_float(a + "yarn_log_multiplier"); lm && *lm != 0.0)
    throw Error(path + ": " + a + "yarn_log_multiplier = " + std::to_string(*lm) +
                " (YaRN's mscale_all_dim, DeepSeek's attention factor) is not supported");
  YarnParams p;
  // llama.cpp reads a missing or zero factor as no scaling.
  const double f = g.get_float(a + "factor").value_or(0.0);
  p.factor = f == 0.0 ? 1.0 : positive_finite(f, a + "factor", path);
  const auto orig = g.get_int(a + "original_context_length");
  p.original_context = orig ? positive_context_size(double(*orig), a + "original_context_length", path) : c.max_context;
  if (auto v = g.get_float(a + "yarn_beta_fast")) p.beta_fast = positive_finite(*v, a + "yarn_beta_fast", path);
  if (auto v = g.get_float(a + "yarn_beta_slow")) p.beta_slow = positive_finite(*v, a + "yarn_beta_slow", path);
  if (auto v = g.get_float(a + "yarn_ext_factor")) {
    if (!(*v >= 0.0 && *v <= 1.0))
      throw Error(path + ": " + a + "yarn_ext_factor = " + std::to_string(*v) + " (expected a number in [0, 1])");
    p.ext_factor = *v;
  }
  const std::vector<float> yarn = yarn_rope_factors(rd, c.rope_theta, p);
  if (c.rope_freq_factors.empty()) c.rope_freq_factors.assign(yarn.size(), 1.0f);
  for (size_t i = 0; i < yarn.size(); ++i) c.rope_freq_factors[i] *= yarn[i];
  double m = yarn_mscale(p.factor);
  if (auto v = g.get_float(a + "yarn_attn_factor")) m = positive_finite(*v, a + "yarn_attn_factor", path);
  if (auto v = g.get_float(a + "attn_factor")) m *= positive_finite(*v, a + "attn_factor", path);
  c.rope_attn_factor = float(m);
}

}  // namespace greta
