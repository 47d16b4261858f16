// Rotary position embedding fused with the KV-cache write.
// angle_i = pos * inv_freq[i]; a pair (a, b) becomes (a cos - b sin, a sin + b cos).
// The arithmetic is llama.cpp's (ggml rope, so greedy tokens follow its through near-ties):
// for the usual geometric frequencies (inv_freq[i] = theta_scale^i) the angle is built by
// repeated float multiplication, angle_0 = pos, angle_i = angle_{i-1} * theta_scale; cos and
// sin are the float cosf / sinf; the rotation is a = fma(x0, c, -(x1 s)), b = fma(x0, s, x1 c)
// (what the compiler makes of ggml's x0*c - x1*s with FMA contraction). Non-geometric
// frequencies (Llama 3 scaling) take angle_i = pos * inv_freq[i].
// Pairing: neox=false rotates adjacent elements (x[2i], x[2i+1]) as GGUF Llama weights expect
// (llama.cpp's converter permutes the Q/K rows for this); neox=true rotates the two halves
// (x[i], x[i + hd/2]) as HF checkpoints do.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/kv_rows.h"
#include "backend/cpu/simd.h"

namespace greta::cpu {
namespace {

void rotate_head(float* x, const float* cs, int half, bool neox) {
  if (neox) {
    for (int i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float a = x[i], b = x[i + half];
      x[i] = std::fma(a, c, -(b * s));
      x[i + half] = std::fma(a, s, b * c);
    }
  } else {
    for (int i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = std::fma(a, c, -(b * s));
      x[2 * i + 1] = std::fma(a, s, b * c);
    }
  }
}

// True when inv_freq[i] is theta_scale^i (inv_freq[0] == 1): the repeated float product stays
// within 1e-5 of every entry. Scaled frequencies (Llama 3 factors) are not.
bool geometric(const float* inv_freq, int half) {
  if (half < 2 || inv_freq[0] != 1.0f) return false;
  float f = 1.0f;
  for (int i = 1; i < half; ++i) {
    f *= inv_freq[1];
    if (std::fabs(f - inv_freq[i]) > 1e-5f * inv_freq[i]) return false;
  }
  return true;
}

}  // namespace

void rope_tables(const int32_t* positions, int64_t n, const float* inv_freq, int half, float* cs) {
  const bool geo = geometric(inv_freq, half);
  for (int64_t t = 0; t < n; ++t) {
    float angle = float(positions[t]);
    for (int i = 0; i < half; ++i) {
      if (!geo) angle = float(positions[t]) * inv_freq[i];
      cs[(t * half + i) * 2] = cosf(angle);
      cs[(t * half + i) * 2 + 1] = sinf(angle);
      if (geo) angle *= inv_freq[1];
    }
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
    store_kv_rows(kv.dtype, k + t * kv_row, n_kv, hd, kv.k, kv.k_scale, slots[t]);
    store_kv_rows(kv.dtype, v + t * kv_row, n_kv, hd, kv.v, kv.v_scale, slots[t]);
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
