// The mixture-of-experts router and the weighted scatter of the experts' outputs. Both are tiny
// next to the expert matmuls (n x n_experts values; m rows), so they run on the calling thread.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace greta::cpu {

void moe_route(const float* logits, int64_t n, int n_experts, int k, bool renormalize, int32_t* ids, float* weights) {
  std::vector<float> p(static_cast<size_t>(n_experts));
  std::vector<bool> taken(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < n; ++t) {
    const float* row = logits + t * n_experts;
    float mx = -std::numeric_limits<float>::infinity();
    for (int e = 0; e < n_experts; ++e) mx = std::max(mx, row[e]);
    double sum = 0.0;
    for (int e = 0; e < n_experts; ++e) {
      p[size_t(e)] = std::exp(row[e] - mx);
      sum += p[size_t(e)];
    }
    const float inv = float(1.0 / sum);
    for (float& v : p) v *= inv;
    // k passes of a selection: the first maximum in id order wins, so equal probabilities go to
    // the lower id; a NaN ranks below every number (and is taken only when nothing else is left).
    std::fill(taken.begin(), taken.end(), false);
    int32_t* id = ids + t * k;
    float* w = weights + t * k;
    float chosen = 0.0f;
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < n_experts; ++e) {
        if (taken[size_t(e)]) continue;
        if (best < 0 || p[size_t(e)] > p[size_t(best)] || (std::isnan(p[size_t(best)]) && !std::isnan(p[size_t(e)])))
          best = e;
      }
      taken[size_t(best)] = true;
      id[j] = best;
      w[j] = p[size_t(best)];
      chosen += w[j];
    }
    if (renormalize)
      for (int j = 0; j < k; ++j) w[j] /= chosen;
  }
}

void add_rows_scaled(const float* x, int64_t m, int64_t cols, const int32_t* rows, const float* weights, float* out) {
  for (int64_t j = 0; j < m; ++j) {
    float* o = out + int64_t(rows[j]) * cols;
    const float* xj = x + j * cols;
    const float w = weights[j];
    for (int64_t c = 0; c < cols; ++c) o[c] += w * xj[c];
  }
}

}  // namespace greta::cpu
