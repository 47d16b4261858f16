#include "model/dynamic_ntk.h"

#include <cmath>

#include "core/error.h"

namespace greta {

void read_hf_dynamic_ntk(const nlohmann::json& rs, const std::string& rs_name, ModelConfig& c,
                         const std::string& where) {
  auto it = rs.find("factor");
  if (it == rs.end() || it->is_null())
    throw Error(where + ": dynamic RoPE scaling needs '" + rs_name + ".factor' (a number)");
  if (!it->is_number()) throw Error(where + ": key '" + rs_name + ".factor' must be a number");
  c.rope_dynamic_factor = positive_finite(it->get<double>(), rs_name + ".factor", where);
  const int rd = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  if (rd <= 2) throw Error(where + ": dynamic RoPE scaling needs more than 2 rotated dims (d / (d - 2))");
}

double dynamic_ntk_theta(const ModelConfig& c, int64_t length) {
  if (c.rope_dynamic_factor <= 0.0f || length <= c.max_context) return c.rope_theta;
  const double s = c.rope_dynamic_factor, d = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  return double(c.rope_theta) * std::pow(s * double(length) / double(c.max_context) - (s - 1.0), d / (d - 2.0));
}

std::vector<float> dynamic_ntk_inv_freq(const ModelConfig& c, int64_t length) {
  ModelConfig grown = c;
  grown.rope_theta = float(dynamic_ntk_theta(c, length));
  return grown.rope_inv_freq();
}

}  // namespace greta
