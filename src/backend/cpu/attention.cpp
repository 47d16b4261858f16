// Causal attention over the paged KV cache.
// Token t of sequence s at position p attends to cache positions 0..p of s, found through the
// block table: position j lives at slot block_ids[block_begin[s] + j / bs] * bs + j % bs.
// One task handles one token, a run of query heads that share a KV head (GQA: each K/V row is
// loaded once for the whole group) and a range of positions. The softmax is computed online
// (running max and sum, rescaling the accumulator when the max grows), one KV block at a time:
// memory per task is O(heads * (head_dim + block_size)), never O(context). With few tokens
// (decode) the positions are split into ranges whose partial results (max, sum, accumulator)
// are merged afterwards, so both threads work on a single sequence's long context.
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

// a = a * corr + sum_c p[c] * v[c * row .. + n]: the accumulator stays in registers across the
// block's rows (one load and one store of a per block instead of per position).
inline void accumulate(float* a, float corr, const float* p, const float* v, int cnt, size_t row, int n) {
  int i = 0;
#ifdef GRETA_AVX2
  const __m256 cv = _mm256_set1_ps(corr);
  for (; i + 32 <= n; i += 32) {
    __m256 a0 = _mm256_mul_ps(cv, _mm256_loadu_ps(a + i)), a1 = _mm256_mul_ps(cv, _mm256_loadu_ps(a + i + 8));
    __m256 a2 = _mm256_mul_ps(cv, _mm256_loadu_ps(a + i + 16)), a3 = _mm256_mul_ps(cv, _mm256_loadu_ps(a + i + 24));
    for (int c = 0; c < cnt; ++c) {
      const float* vr = v + c * row + i;
      const __m256 pv = _mm256_set1_ps(p[c]);
      a0 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr), a0);
      a1 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr + 8), a1);
      a2 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr + 16), a2);
      a3 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr + 24), a3);
    }
    _mm256_storeu_ps(a + i, a0);
    _mm256_storeu_ps(a + i + 8, a1);
    _mm256_storeu_ps(a + i + 16, a2);
    _mm256_storeu_ps(a + i + 24, a3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a0 = _mm256_mul_ps(cv, _mm256_loadu_ps(a + i));
    for (int c = 0; c < cnt; ++c) a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[c]), _mm256_loadu_ps(v + c * row + i), a0);
    _mm256_storeu_ps(a + i, a0);
  }
#endif
  for (; i < n; ++i) {
    float x = a[i] * corr;
    for (int c = 0; c < cnt; ++c) x += p[c] * v[c * row + i];
    a[i] = x;
  }
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

// Heads [h0, h1) of token t (all sharing kv head g) over cache positions [p0, p1), p1 <= pos+1.
// Writes per head the running max m, normaliser l and the unnormalised sum acc = sum e^(s-m) v:
// part [nh, hd + 2] = (acc[hd], m, l). buf: nh * bs floats of scores.
void attend(const float* q, int64_t t, int n_heads, int h0, int h1, int g, float scale, int32_t p0, int32_t p1,
            const StepPlan& plan, const KVLayer& kv, float* part, float* sc) {
  const int hd = kv.head_dim, bs = kv.block_size, nh = h1 - h0;
  const size_t row = size_t(kv.n_kv_heads) * hd;
  const int32_t* blocks = plan.block_ids.data() + plan.block_begin[plan.token_seq[t]];
  const float* qh = q + (t * n_heads + h0) * hd;
  for (int h = 0; h < nh; ++h) {
    float* ph = part + size_t(h) * (hd + 2);
    std::fill(ph, ph + hd, 0.0f);
    ph[hd] = -std::numeric_limits<float>::infinity();
    ph[hd + 1] = 0.0f;
  }
  for (int32_t j0 = p0; j0 < p1;) {
    // Positions j0 .. j0+cnt-1 share a block (p0 need not be block aligned).
    const int cnt = std::min<int32_t>(bs - j0 % bs, p1 - j0);
    const size_t base = size_t(blocks[j0 / bs]) * bs + size_t(j0 % bs);
    const float* kb = kv.k + base * row + size_t(g) * hd;
    const float* vb = kv.v + base * row + size_t(g) * hd;
    for (int h = 0; h < nh; ++h) {
      float* ph = part + size_t(h) * (hd + 2);
      float* s_h = sc + h * bs;
      float m = ph[hd];
      for (int c = 0; c < cnt; ++c) {
        s_h[c] = scale * dot(qh + h * hd, kb + c * row, hd);
        m = std::max(m, s_h[c]);
      }
      const float corr = std::exp(ph[hd] - m);  // 0 on the first block (old max = -inf)
      ph[hd + 1] = ph[hd + 1] * corr + exp_shift(s_h, cnt, m);
      ph[hd] = m;
      accumulate(ph, corr, s_h, vb, cnt, row, hd);
    }
    j0 += cnt;
  }
}

}  // namespace

void attention(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv,
               float* out, ThreadPool& pool) {
  const int n_kv = kv.n_kv_heads, hd = kv.head_dim, bs = kv.block_size;
  const int group = n_heads / n_kv;
  const int heads_per_task = std::min(group, 64);  // whole GQA groups: each K/V row is read once
  const int tasks_per_group = (group + heads_per_task - 1) / heads_per_task;
  const int64_t units = n * n_kv * tasks_per_group;  // (token, head run) pairs
  // Few tokens (decode) cannot keep the threads busy with one unit each: split the positions of
  // each unit into ranges of whole blocks ("flash-decoding") and merge the partial softmaxes.
  int32_t max_len = 0;
  for (int64_t t = 0; t < n; ++t) max_len = std::max(max_len, plan.positions[size_t(t)] + 1);
  const int64_t max_blocks = (max_len + bs - 1) / bs;
  // The split count depends on the work only, never on the thread count, so results are
  // identical for any number of threads.
  constexpr int64_t kMinTasks = 16;
  int64_t splits = 1;
  if (units < kMinTasks) {
    splits = (kMinTasks + units - 1) / units;
    splits = std::max<int64_t>(1, std::min(splits, max_blocks / 4));  // >= 4 blocks per split
  }
  const int64_t split_len = (max_blocks + splits - 1) / splits * bs;  // positions, block aligned
  const size_t part_floats = size_t(heads_per_task) * (hd + 2);
  thread_local std::vector<float> partials;  // caller's thread; grows once, then reused
  if (partials.size() < size_t(units * splits) * part_floats) partials.resize(size_t(units * splits) * part_floats);
  float* parts = partials.data();
  pool.run(units * splits, [&](int64_t task, int) {
    thread_local std::vector<float> sc;  // scores of one block per head; grows once per thread
    if (sc.size() < size_t(heads_per_task) * bs) sc.resize(size_t(heads_per_task) * bs);
    const int64_t u = task / splits, sp = task % splits;
    const int64_t t = u / (n_kv * tasks_per_group);
    const int r = int(u % (n_kv * tasks_per_group));
    const int g = r / tasks_per_group;
    const int h0 = g * group + (r % tasks_per_group) * heads_per_task;
    const int h1 = std::min(h0 + heads_per_task, (g + 1) * group);
    const int32_t len = plan.positions[size_t(t)] + 1;
    const int32_t p0 = int32_t(std::min<int64_t>(len, sp * split_len));
    const int32_t p1 = int32_t(std::min<int64_t>(len, (sp + 1) * split_len));
    attend(q, t, n_heads, h0, h1, g, scale, p0, p1, plan, kv, parts + size_t(task) * part_floats, sc.data());
  });
  // Merge: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s, M = max_s m_s. Empty ranges have
  // m = -inf, l = 0 and drop out (weight 0).
  auto merge = [&](int64_t u) {
    const int64_t t = u / (n_kv * tasks_per_group);
    const int r = int(u % (n_kv * tasks_per_group));
    const int g = r / tasks_per_group;
    const int h0 = g * group + (r % tasks_per_group) * heads_per_task;
    const int h1 = std::min(h0 + heads_per_task, (g + 1) * group);
    for (int h = 0; h < h1 - h0; ++h) {
      float M = -std::numeric_limits<float>::infinity();
      for (int64_t sp = 0; sp < splits; ++sp) M = std::max(M, parts[size_t(u * splits + sp) * part_floats + h * (hd + 2) + hd]);
      float* o = out + (t * n_heads + h0 + h) * hd;
      std::fill(o, o + hd, 0.0f);
      float l = 0.0f;
      for (int64_t sp = 0; sp < splits; ++sp) {
        const float* ph = parts + size_t(u * splits + sp) * part_floats + h * (hd + 2);
        if (ph[hd + 1] == 0.0f) continue;
        const float w = std::exp(ph[hd] - M);
        l += w * ph[hd + 1];
        for (int i = 0; i < hd; ++i) o[i] += w * ph[i];
      }
      const float inv = 1.0f / l;
      for (int i = 0; i < hd; ++i) o[i] *= inv;
    }
  };
  if (units < 64) {
    for (int64_t u = 0; u < units; ++u) merge(u);
  } else {
    pool.run((units + 63) / 64, [&](int64_t c, int) {
      for (int64_t u = c * 64; u < std::min(units, (c + 1) * 64); ++u) merge(u);
    });
  }
}

}  // namespace greta::cpu
