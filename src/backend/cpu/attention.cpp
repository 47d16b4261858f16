// Causal attention over the paged KV cache.
// Token t of sequence s at position p attends to cache positions 0..p of s, found through the
// block table: position j lives at slot block_ids[block_begin[s] + j / bs] * bs + j % bs.
// One task handles one token and a run of query heads that share a KV head (GQA), so each K/V
// row is loaded once for the whole group. The softmax is computed online (running max and sum,
// rescaling the accumulator when the max grows), one KV block at a time: memory per task is
// O(heads * (head_dim + block_size)), never O(context).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"

namespace greta::cpu {
namespace {

inline float dot(const float* a, const float* b, int n) {
  int i = 0;
  float s = 0.0f;
#ifdef GRETA_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  s = hsum(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y = y * c + p * v
inline void scale_axpy(float* y, float c, float p, const float* v, int n) {
  int i = 0;
#ifdef GRETA_AVX2
  const __m256 cv = _mm256_set1_ps(c), pv = _mm256_set1_ps(p);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + i), _mm256_mul_ps(cv, _mm256_loadu_ps(y + i))));
#endif
  for (; i < n; ++i) y[i] = y[i] * c + p * v[i];
}

// e[i] = exp(s[i] - m), returns the sum.
inline float exp_shift(float* s, int n, float m) {
  int i = 0;
  float sum = 0.0f;
#ifdef GRETA_AVX2
  const __m256 mv = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
    _mm256_storeu_ps(s + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = hsum(acc);
#endif
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - m);
    sum += s[i];
  }
  return sum;
}

// Heads [h0, h1) of token t (all sharing kv head g). buf: (h1-h0) * (hd + bs) floats.
void attend(const float* q, int64_t t, int n_heads, int h0, int h1, int g, float scale, const StepPlan& plan,
            const KVLayer& kv, float* out, float* buf) {
  const int hd = kv.head_dim, bs = kv.block_size, nh = h1 - h0;
  const size_t row = size_t(kv.n_kv_heads) * hd;
  const int s = plan.token_seq[t];
  const int32_t len = plan.positions[t] + 1;
  const int32_t* blocks = plan.block_ids.data() + plan.block_begin[s];
  float* acc = buf;                        // [nh, hd]
  float* sc = buf + size_t(nh) * hd;       // [nh, bs]
  float mx[64], sum[64];                   // running max / normaliser per head (nh <= 64)
  for (int h = 0; h < nh; ++h) mx[h] = -std::numeric_limits<float>::infinity(), sum[h] = 0.0f;
  std::fill(acc, acc + size_t(nh) * hd, 0.0f);
  const float* qh = q + (t * n_heads + h0) * hd;
  for (int32_t j0 = 0; j0 < len; j0 += bs) {
    const int cnt = std::min<int32_t>(bs, len - j0);
    const size_t base = size_t(blocks[j0 / bs]) * bs;
    const float* kb = kv.k + base * row + size_t(g) * hd;
    const float* vb = kv.v + base * row + size_t(g) * hd;
    for (int h = 0; h < nh; ++h) {
      float* s_h = sc + h * bs;
      float m = mx[h];
      for (int c = 0; c < cnt; ++c) {
        s_h[c] = scale * dot(qh + h * hd, kb + c * row, hd);
        m = std::max(m, s_h[c]);
      }
      const float corr = std::exp(mx[h] - m);  // 0 on the first block (mx = -inf)
      sum[h] = sum[h] * corr + exp_shift(s_h, cnt, m);
      mx[h] = m;
      float* a = acc + h * hd;
      scale_axpy(a, corr, s_h[0], vb, hd);
      for (int c = 1; c < cnt; ++c) scale_axpy(a, 1.0f, s_h[c], vb + c * row, hd);
    }
  }
  for (int h = 0; h < nh; ++h) {
    const float inv = 1.0f / sum[h];
    float* o = out + (t * n_heads + h0 + h) * hd;
    for (int i = 0; i < hd; ++i) o[i] = acc[h * hd + i] * inv;
  }
}

}  // namespace

void attention(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv,
               float* out, ThreadPool& pool) {
  const int n_kv = kv.n_kv_heads;
  const int group = n_heads / n_kv;
  // Few tokens (decode): one head per task so every thread has work; otherwise whole groups.
  const int heads_per_task = (n * n_kv < 4 * pool.size()) ? 1 : std::min(group, 64);
  const int tasks_per_group = (group + heads_per_task - 1) / heads_per_task;
  const int64_t tasks_per_token = int64_t(n_kv) * tasks_per_group;
  const size_t buf_floats = size_t(heads_per_task) * (kv.head_dim + kv.block_size);
  pool.run(n * tasks_per_token, [&](int64_t task, int) {
    thread_local std::vector<float> buf;  // grows once per thread, then reused
    if (buf.size() < buf_floats) buf.resize(buf_floats);
    const int64_t t = task / tasks_per_token;
    const int r = int(task % tasks_per_token);
    const int g = r / tasks_per_group;
    const int h0 = g * group + (r % tasks_per_group) * heads_per_task;
    const int h1 = std::min(h0 + heads_per_task, (g + 1) * group);
    attend(q, t, n_heads, h0, h1, g, scale, plan, kv, out, buf.data());
  });
}

}  // namespace greta::cpu
