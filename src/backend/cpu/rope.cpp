// Rotary position embedding fused with the KV-cache write.
// angle_i = pos * inv_freq[i]; a pair (a, b) becomes (a cos - b sin, a sin + b cos).
// Pairing: neox=false rotates adjacent elements (x[2i], x[2i+1]) as GGUF Llama weights expect
// (llama.cpp's converter permutes the Q/K rows for this); neox=true rotates the two halves
// (x[i], x[i + hd/2]) as HF checkpoints do.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_kernels.h"

namespace greta::cpu {
namespace {

void rotate_head(float* x, const float* cs, int half, bool neox) {
  if (neox) {
    for (int i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float a = x[i], b = x[i + half];
      x[i] = a * c - b * s;
      x[i + half] = a * s + b * c;
    }
  } else {
    for (int i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c - b * s;
      x[2 * i + 1] = a * s + b * c;
    }
  }
}

}  // namespace

void rope_tables(const int32_t* positions, int64_t n, const float* inv_freq, int half, float* cs) {
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < half; ++i) {
      // Angle in float like the reference implementations (HF computes pos * inv_freq in fp32),
      // sin/cos in double so the only rounding is the angle's.
      const float angle = float(positions[t]) * inv_freq[i];
      cs[(t * half + i) * 2] = float(std::cos(double(angle)));
      cs[(t * half + i) * 2 + 1] = float(std::sin(double(angle)));
    }
}

void rope_kv_write(float* q, float* k, const float* v, int64_t n, int n_heads, const float* cs, bool neox,
                   const int32_t* slots, const KVLayer& kv, ThreadPool& pool) {
  const int hd = kv.head_dim, half = hd / 2, n_kv = kv.n_kv_heads;
  const size_t kv_row = size_t(n_kv) * hd;
  auto do_token = [&](int64_t t) {
    const float* c = cs + t * half * 2;
    for (int h = 0; h < n_heads; ++h) rotate_head(q + (t * n_heads + h) * hd, c, half, neox);
    for (int h = 0; h < n_kv; ++h) rotate_head(k + (t * n_kv + h) * hd, c, half, neox);
    std::memcpy(kv.k + size_t(slots[t]) * kv_row, k + t * kv_row, kv_row * sizeof(float));
    std::memcpy(kv.v + size_t(slots[t]) * kv_row, v + t * kv_row, kv_row * sizeof(float));
  };
  constexpr int64_t kTokensPerTask = 16;
  if (n <= kTokensPerTask) {
    for (int64_t t = 0; t < n; ++t) do_token(t);
    return;
  }
  pool.run((n + kTokensPerTask - 1) / kTokensPerTask, [&](int64_t task, int) {
    const int64_t t1 = std::min(n, (task + 1) * kTokensPerTask);
    for (int64_t t = task * kTokensPerTask; t < t1; ++t) do_token(t);
  });
}

}  // namespace greta::cpu
