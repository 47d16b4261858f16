#include "model/config.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace greta {

float positive_finite(double v, const std::string& key, const std::string& where) {
  const float f = float(v);
  if (!(std::isfinite(f) && f > 0.0f)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    throw Error(where + ": " + key + " = " + buf + " (expected a finite number > 0)");
  }
  return f;
}

int positive_context_size(double v, const std::string& key, const std::string& where) {
  if (!(v >= 1.0 && v <= double(1 << 30) && v == std::floor(v)))
    throw Error(where + ": " + key + " = " + std::to_string(v) + " (expected a positive size)");
  return int(v);
}

std::vector<float> ModelConfig::rope_inv_freq(bool long_factors) const {
  const int half = head_dim / 2, rd = rope_dim > 0 ? rope_dim : head_dim;
  const std::vector<float>& factors = long_factors ? rope_long_freq_factors : rope_freq_factors;
  std::vector<float> inv(half, 0.0f);
  for (int i = 0; i < rd / 2; ++i) {
    // Computed in double so CPU and GPU backends start from identical frequencies.
    double f = 1.0 / std::pow(double(rope_theta), double(2 * i) / double(rd));
    if (!factors.empty()) f /= double(factors[i]);
    inv[i] = float(f);
  }
  return inv;
}

std::vector<float> ModelConfig::rope_local_inv_freq() const {
  ModelConfig local = *this;
  local.rope_theta = rope_local_theta;
  local.rope_freq_factors.clear();
  return local.rope_inv_freq();
}

std::vector<float> llama3_rope_factors(int head_dim, float theta, float factor, float low_freq_factor,
                                       float high_freq_factor, int original_max_positions) {
  // Meta's Llama 3.1 scaling: long wavelengths are slowed by `factor`, short ones kept,
  // and the band between is interpolated smoothly.
  const double pi = 3.14159265358979323846;
  const double low_wavelen = double(original_max_positions) / low_freq_factor;
  const double high_wavelen = double(original_max_positions) / high_freq_factor;
  std::vector<float> out(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(double(theta), double(2 * i) / double(head_dim));
    const double wavelen = 2.0 * pi / freq;
    double div;
    if (wavelen < high_wavelen) {
      div = 1.0;
    } else if (wavelen > low_wavelen) {
      div = factor;
    } else {
      const double smooth = (double(original_max_positions) / wavelen - low_freq_factor) /
                            (high_freq_factor - low_freq_factor);
      // new_freq = (1 - smooth) * freq / factor + smooth * freq  ->  divisor = freq / new_freq
      div = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    out[i] = float(div);
  }
  return out;
}

}  // namespace greta
