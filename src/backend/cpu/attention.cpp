// Causal attention over the paged KV cache, in llama.cpp's arithmetic for its F16 cache.
// Token t of sequence s at position p attends to cache positions 0..p of s, found through the
// block table: position j lives at slot block_ids[block_begin[s] + j / bs] * bs + j % bs.
//
// Why this order: the CPU backend is meant to give llama.cpp's greedy tokens (its CPU backend,
// non-flash attention, F16 cache), and greedy paths part at near-ties unless every op rounds the
// same. ggml computes, per head:
//   kq   = K q          q rounded to fp16; each score an fp16 dot product (below)
//   w    = kq * scale   (float), masked positions -inf
//   e    = exp(w - max) ggml's exp (exp_ggml); sum in double over groups of 16 positions, each
//                       group summed in float in _mm512_reduce_add_ps order (zeros past the end)
//   p    = e * float(1 / sum), rounded to fp16
//   out  = V^T p        one fp16 dot product over positions per output element
// An fp16 dot product is one of two shapes, chosen like ggml's mul_mat does:
//   - steps with one token (decode): ggml_vec_dot_f16, 64 float lanes, element i in lane i % 64,
//     summed in order; lanes l, l+16, l+32, l+48 folded as (l + l+32) + (l+16 + l+48), then the
//     16 lanes reduced; elements past the last multiple of 64 added in double.
//   - steps with >= 2 tokens (prompts, batches): llamafile's tinyBLAS, 16 float lanes (element
//     i in lane i % 16) then the 16-lane reduction, when the length is a multiple of 16 (q.k) or
//     the row count of 4 (V^T p); otherwise the vec_dot shape.
// Products of two fp16 values are exact in float, so fma and mul+add agree here.
// The positions of V^T p start at cache cell 0, as llama.cpp's do for a single sequence.
// With a soft cap (Gemma 2), llama.cpp's graph scales q before the attention (q * scale, then
// rounded to fp16) and caps each kq before a softmax of scale 1: w = tanhf(kq * (1 / cap)) * cap.
//
// Other caches (BF16, FP8: kv_rows.h) take the same order with their values decoded where they are
// read -- in the inner loops, 8 at a time, no dequantized copy of the cache -- and without the two
// fp16 roundings that are llama.cpp's F16 arithmetic: q and p stay float. An FP8 row's scale
// multiplies its q . k once, and its p before p v_j.
//
// 256-bit vectors only: 512-bit FMAs here lowered the core clock enough to slow the (256-bit)
// quantized matmuls around them by ~3% of a decode step on this Xeon.
//
// Work is split over (token, head) pairs; each is computed by one thread from start to end,
// so results do not depend on the thread count. Memory per task: the scores of one head
// (O(context)) and a [lanes, head_dim] accumulator.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/kv_rows.h"
#include "backend/cpu/simd.h"
#include "core/error.h"

namespace greta::cpu {
namespace {

inline float round_fp16(float x) {
#ifdef GRETA_AVX2
  return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
#else
  return fp16_to_float(float_to_fp16(x));
#endif
}

// 16 lanes summed in _mm512_reduce_add_ps order (see reduce16 in simd.h).
inline float reduce16_scalar(const float* a) {
  float b[8], c[4];
  for (int i = 0; i < 8; ++i) b[i] = a[i] + a[i + 8];
  for (int i = 0; i < 4; ++i) c[i] = b[i] + b[i + 4];
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// Fold 64 vec_dot lanes to 16: lane l gets (l + l+32) + (l+16 + l+48).
inline void fold64(const float* a, float* out16) {
  for (int l = 0; l < 16; ++l) out16[l] = (a[l] + a[l + 32]) + (a[l + 16] + a[l + 48]);
}

// The llama.cpp arithmetic (q and p rounded to fp16) belongs to the F16 cache.
template <class E>
constexpr bool kGgmlF16 = std::is_same_v<E, KvF16>;

// Dot product of x (floats; fp16 values for the F16 cache) and the cache row y (elements of E,
// unscaled), n elements, in one of ggml's two shapes (see the top of the file). Scalar reference
// of the vector path below.
template <class E>
float dot_scalar(const float* x, const typename E::T* y, int n, bool tiny) {
  if (tiny) {  // n % 16 == 0
    float acc[16] = {};
    for (int i = 0; i < n; ++i) acc[i % 16] += x[i] * E::get(y, i);
    return reduce16_scalar(acc);
  }
  const int np = n & ~63;
  double sum = 0.0;
  if (np) {
    float acc[64] = {}, f[16];
    for (int i = 0; i < np; ++i) acc[i % 64] += x[i] * E::get(y, i);
    fold64(acc, f);
    sum = reduce16_scalar(f);
  }
  for (int i = np; i < n; ++i) sum += double(x[i] * E::get(y, i));
  return float(sum);
}

#ifdef GRETA_AVX2
// dot_scalar for n % 16 == 0, 16 lanes as two 8-float vectors. Always inlined: it runs once per
// (position, head), and a call per position cost a third of attention's time.
template <class E>
__attribute__((always_inline)) inline float dot_vec(const float* __restrict x, const typename E::T* __restrict y, int n,
                                                    bool tiny) {
  if (tiny) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 16) {
      lo = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), E::load8(y + i), lo);
      hi = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), E::load8(y + i + 8), hi);
    }
    return reduce16(lo, hi);
  }
  const int np = n & ~63;
  double sum = 0.0;
  if (np) {
    __m256 a[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 64)
      for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * r), E::load8(y + i + 8 * r), a[r]);
    // accumulator r/2 of ggml (16 lanes = vectors 2r/2 and 2r/2 + 1): (0 + 2) + (1 + 3)
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    sum = reduce16(lo, hi);
  }
  for (int i = np; i < n; ++i) sum += double(x[i] * E::get(y, i));
  return float(sum);
}
#endif  // GRETA_AVX2

// --- the pieces of one head's attention (the order described at the top) ---

// The cache rows (KVLayer) of positions [0, len) of kv head g, through the block table.
void row_indices(const int32_t* blocks, int32_t len, int g, const KVLayer& kv, size_t* rows) {
  const int bs = kv.block_size, n_kv = kv.n_kv_heads;
  for (int32_t j0 = 0; j0 < len; j0 += bs) {
    const size_t base = size_t(blocks[j0 / bs]) * bs * n_kv + size_t(g);
    for (int32_t j = j0; j < std::min(len, j0 + bs); ++j) rows[size_t(j)] = base + size_t(j - j0) * n_kv;
  }
}

template <class E>
const typename E::T* k_of(const KVLayer& kv) {
  return static_cast<const typename E::T*>(kv.k);
}
template <class E>
const typename E::T* v_of(const KVLayer& kv) {
  return static_cast<const typename E::T*>(kv.v);
}

// s[j] = (q . k_j) * scale for j in [j0, j1), soft-capped when cap > 0; returns their max. qf: q as
// prepare_q leaves it; ks: the K rows' scales (scaled caches).
template <class E, bool TINY, bool VEC>
float scores_t(const float* __restrict qf, const typename E::T* __restrict k, const float* __restrict ks,
               const size_t* __restrict rows, int hd, int32_t j0, int32_t j1, float scale, float cap,
               float* __restrict s) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t j = j0; j < j1; ++j) {
    const typename E::T* kj = k + rows[j] * size_t(hd);
#ifdef GRETA_AVX2
    float d = VEC ? dot_vec<E>(qf, kj, hd, TINY) : dot_scalar<E>(qf, kj, hd, TINY);
#else
    float d = dot_scalar<E>(qf, kj, hd, TINY);
#endif
    if constexpr (E::kRowScaled) d *= E::row_factor(ks[rows[j]]);
    s[j] = cap > 0.0f ? softcap(d * scale, cap) : d * scale;
    mx = std::max(mx, s[j]);
  }
  return mx;
}

template <class E>
float scores(const float* qf, const KVLayer& kv, const size_t* rows, int32_t j0, int32_t j1, bool tiny, float scale,
             float cap, float* s) {
  const int hd = kv.head_dim;
  const auto* k = k_of<E>(kv);
  if (hd % 16 == 0)
    return tiny ? scores_t<E, true, true>(qf, k, kv.k_scale, rows, hd, j0, j1, scale, cap, s)
                : scores_t<E, false, true>(qf, k, kv.k_scale, rows, hd, j0, j1, scale, cap, s);
  return tiny ? scores_t<E, true, false>(qf, k, kv.k_scale, rows, hd, j0, j1, scale, cap, s)
              : scores_t<E, false, false>(qf, k, kv.k_scale, rows, hd, j0, j1, scale, cap, s);
}

// q as the scores take it (rounded to fp16 for the F16 cache), and the scale left to apply to
// q . k: with a soft cap q is scaled first (see the top of the file).
template <class E>
float prepare_q(const float* q, int count, float scale, float cap, float* qf) {
  const float qs = cap > 0.0f ? scale : 1.0f;
  for (int i = 0; i < count; ++i) qf[i] = kGgmlF16<E> ? round_fp16(q[i] * qs) : q[i] * qs;
  return cap > 0.0f ? 1.0f : scale;
}

// For the 16-position groups g = g0, g0 + gstep, ... < g1: s = exp(s - mx) in place (zeros past
// L, up to the group's end) and gsum[g] = the group's float sum in reduce16 order.
void exp_groups(float* s, int32_t L, float mx, int32_t g0, int32_t g1, int32_t gstep, float* gsum) {
  for (int32_t g = g0; g < g1; g += gstep) {
    float* e = s + 16 * g;
#ifdef GRETA_AVX2
    if (16 * g + 16 <= L) {
      const __m256 mv = _mm256_set1_ps(mx);
      const __m256 lo = exp_ggml_ps(_mm256_sub_ps(_mm256_loadu_ps(e), mv));
      const __m256 hi = exp_ggml_ps(_mm256_sub_ps(_mm256_loadu_ps(e + 8), mv));
      _mm256_storeu_ps(e, lo);
      _mm256_storeu_ps(e + 8, hi);
      gsum[g] = reduce16(lo, hi);
      continue;
    }
#endif
    for (int32_t i = 0; i < 16; ++i) e[i] = 16 * g + i < L ? exp_ggml(e[i] - mx) : 0.0f;
    gsum[g] = reduce16_scalar(e);
  }
}

// The weight position j's V row takes: fp16(e_j * inv) for the F16 cache (llama.cpp), e_j * inv
// otherwise, times the row's scale for a scaled cache.
template <class E>
inline float weight(const float* e, float inv, const KVLayer& kv, const size_t* rows, int32_t j) {
  const float p = kGgmlF16<E> ? round_fp16(e[j] * inv) : e[j] * inv;
  if constexpr (E::kRowScaled) return p * E::row_factor(kv.v_scale[rows[j]]);
  return p;
}

// A[l] (one row of hd floats per lane) = sum over positions j = l, l + lanes, ... < L of p_j v_j,
// in position order, for lanes [l0, l1), with p_j (weight()) formed on the fly (each position is
// read by one lane; nothing is written back to e). Lanes no position reaches are left alone.
// Positions below lo (outside a sliding window: p_j = 0) are skipped.
template <class E>
void accumulate_lanes(const float* e, float inv, const KVLayer& kv, const size_t* rows, int32_t L, int lanes, int l0,
                      int l1, float* A, int32_t lo = 0) {
  const int hd = kv.head_dim;
  const auto* vals = v_of<E>(kv);
  l1 = int(std::min<int32_t>(l1, L));
  // Lane l's first position at or past lo.
  auto first = [&](int l) { return l >= lo ? int32_t(l) : int32_t(l + (lo - l + lanes - 1) / lanes * lanes); };
  for (int l = l0; l < l1; ++l) {
    float* a_row = A + size_t(l) * hd;
    int d0 = 0;
#ifdef GRETA_AVX2
    // 64 outputs at a time: the lane's accumulator stays in 8 registers while its positions stream past.
    for (; d0 + 64 <= hd; d0 += 64) {
      __m256 a[8];
      for (auto& r : a) r = _mm256_setzero_ps();
      for (int32_t j = first(l); j < L; j += lanes) {
        const auto* v = vals + rows[j] * size_t(hd) + d0;
        const __m256 pv = _mm256_set1_ps(weight<E>(e, inv, kv, rows, j));
        for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(pv, E::load8(v + 8 * r), a[r]);
      }
      for (int r = 0; r < 8; ++r) _mm256_storeu_ps(a_row + d0 + 8 * r, a[r]);
    }
#endif
    if (d0 == hd) continue;
    std::fill(a_row + d0, a_row + hd, 0.0f);
    for (int32_t j = first(l); j < L; j += lanes) {
      const auto* v = vals + rows[j] * size_t(hd);
      const float p = weight<E>(e, inv, kv, rows, j);
      int i = d0;
#ifdef GRETA_AVX2
      const __m256 pv = _mm256_set1_ps(p);
      for (; i + 8 <= hd; i += 8)
        _mm256_storeu_ps(a_row + i, _mm256_fmadd_ps(pv, E::load8(v + i), _mm256_loadu_ps(a_row + i)));
#endif
      for (; i < hd; ++i) a_row[i] += p * E::get(v, i);
    }
  }
}

// out[i] = the lanes of A reduced as ggml does: 64 -> 16 ((l + l+32) + (l+16 + l+48), vec_dot
// only), then 16 -> 1. Lanes >= used hold no position and count as zero.
void reduce_lanes(const float* A, int hd, int lanes, int used, float* out) {
  auto lane = [&](int l, int i) { return l < used ? A[size_t(l) * hd + i] : 0.0f; };
  int i0 = 0;
#ifdef GRETA_AVX2
  auto lv = [&](int l, int i) { return l < used ? _mm256_loadu_ps(A + size_t(l) * hd + i) : _mm256_setzero_ps(); };
  for (; i0 + 8 <= hd; i0 += 8) {
    __m256 f[16];
    for (int l = 0; l < 16; ++l)
      f[l] = lanes == 64 ? _mm256_add_ps(_mm256_add_ps(lv(l, i0), lv(l + 32, i0)),
                                         _mm256_add_ps(lv(l + 16, i0), lv(l + 48, i0)))
                         : lv(l, i0);
    for (int l = 0; l < 8; ++l) f[l] = _mm256_add_ps(f[l], f[l + 8]);
    for (int l = 0; l < 4; ++l) f[l] = _mm256_add_ps(f[l], f[l + 4]);
    _mm256_storeu_ps(out + i0, _mm256_add_ps(_mm256_add_ps(f[0], f[2]), _mm256_add_ps(f[1], f[3])));
  }
#endif
  for (int i = i0; i < hd; ++i) {
    float f[16];
    for (int l = 0; l < 16; ++l)
      f[l] = lanes == 64 ? (lane(l, i) + lane(l + 32, i)) + (lane(l + 16, i) + lane(l + 48, i)) : lane(l, i);
    out[i] = reduce16_scalar(f);
  }
}

// The softmax normaliser: the groups' float sums added in double, in position order.
float inv_sum(const float* gsum, int32_t n_groups) {
  double sum = 0.0;
  for (int32_t g = 0; g < n_groups; ++g) sum += double(gsum[g]);
  return float(1.0 / sum);
}

// One (token, head) from start to end on one thread.
struct HeadTask {
  const float* q;  // [hd] this head's query (rotated)
  float* out;      // [hd]
  const int32_t* blocks;
  int32_t len;  // positions 0..len-1
  int32_t lo;   // the first position seen (a sliding window's start; 0 without one)
  int g;        // kv head
  float scale;
  float cap;    // attention soft cap; 0: none
  bool prompt;  // ggml would take tinyBLAS (see the top)
};

struct HeadScratch {
  std::vector<float> s, gsum, acc, q;
  std::vector<size_t> rows;
};

template <class E>
void attend_head(const HeadTask& T, const KVLayer& kv, HeadScratch& w) {
  const int hd = kv.head_dim;
  const bool kq_tiny = T.prompt && hd % 16 == 0, kqv_tiny = T.prompt && hd % 4 == 0;
  const int lanes = kqv_tiny ? 16 : 64;
  const int32_t L = T.len, ng = (L + 15) / 16;
  if (w.rows.size() < size_t(L)) w.rows.resize(size_t(L));
  if (w.s.size() < size_t(16 * ng)) w.s.resize(size_t(16 * ng)), w.gsum.resize(size_t(ng));
  if (w.acc.size() < size_t(lanes) * hd) w.acc.resize(size_t(lanes) * hd);
  if (w.q.size() < size_t(hd)) w.q.resize(size_t(hd));
  row_indices(T.blocks, L, T.g, kv, w.rows.data());
  // q rounded to fp16 for the F16 cache (ggml converts the f32 activations to its vec_dot type).
  const float kq_scale = prepare_q<E>(T.q, hd, T.scale, T.cap, w.q.data());
  float* s = w.s.data();
  // Positions before the window: score -inf, softmax weight exactly 0 (exp_ggml(-inf) = 0).
  std::fill(s, s + T.lo, -std::numeric_limits<float>::infinity());
  const float mx = scores<E>(w.q.data(), kv, w.rows.data(), T.lo, L, kq_tiny, kq_scale, T.cap, s);
  exp_groups(s, L, mx, 0, ng, 1, w.gsum.data());
  accumulate_lanes<E>(s, inv_sum(w.gsum.data(), ng), kv, w.rows.data(), L, lanes, 0, lanes, w.acc.data(), T.lo);
  reduce_lanes(w.acc.data(), hd, lanes, int(std::min<int32_t>(L, lanes)), T.out);
}

// One decode token over a long context: the heads alone (9 on 2 threads for the default model)
// do not balance, so each head's work is cut in three passes over the pool, keeping every sum in
// the order above: (1) scores by chunks of positions, (2) exp and the 16-group sums by chunks of
// groups, (3) p and V^T p by quarters of the 64 lanes (the group sums added in order by each).
// Tasks write disjoint contiguous ranges (interleaved writes cost more in cache-line traffic
// than the work). The lanes are then reduced on the calling thread.
template <class E>
void attend_split(const float* q, int n_heads, int group, float scale, float cap, const int32_t* blocks, int32_t L,
                  int32_t lo, const KVLayer& kv, float* out, ThreadPool& pool) {
  const int hd = kv.head_dim;
  constexpr int32_t kChunk = 512;  // positions per score task
  const int32_t ng = (L + 15) / 16, Lp = 16 * ng, n_chunks = (L + kChunk - 1) / kChunk;
  const int n_kv = kv.n_kv_heads;
  // The caller's buffers, shared by the tasks below through plain pointers (a thread_local
  // named inside a task would be the worker's own).
  thread_local std::vector<float> s_buf, g_buf, a_buf, q_buf, m_buf;
  thread_local std::vector<size_t> o_buf;
  s_buf.resize(size_t(n_heads) * Lp);
  g_buf.resize(size_t(n_heads) * ng);
  a_buf.resize(size_t(n_heads) * 64 * hd);
  q_buf.resize(size_t(n_heads) * hd);
  m_buf.resize(size_t(n_heads) * n_chunks);
  o_buf.resize(size_t(n_kv) * L);
  float *S = s_buf.data(), *G = g_buf.data(), *A = a_buf.data(), *Q = q_buf.data(), *M = m_buf.data();
  size_t* rows = o_buf.data();
  for (int g = 0; g < n_kv; ++g) row_indices(blocks, L, g, kv, rows + size_t(g) * L);
  const float kq_scale = prepare_q<E>(q, n_heads * hd, scale, cap, Q);
  // Scores and V^T p tasks take the heads of one kv head together, so each chunk of K (V) rows is
  // read from memory once and from cache by the group's other heads.
  pool.run(int64_t(n_kv) * n_chunks, [&](int64_t u, int) {
    const int g = int(u / n_chunks);
    const int32_t c = int32_t(u % n_chunks), j0 = c * kChunk, j1 = std::min(L, j0 + kChunk);
    const int32_t js = std::min(j1, std::max(j0, lo));  // positions before the window: -inf
    for (int h = g * group; h < (g + 1) * group; ++h) {
      float* s = S + size_t(h) * Lp;
      std::fill(s + j0, s + js, -std::numeric_limits<float>::infinity());
      M[size_t(h) * n_chunks + c] = js < j1 ? scores<E>(Q + size_t(h) * hd, kv, rows + size_t(g) * L, js, j1, false,
                                                        kq_scale, cap, s)
                                            : -std::numeric_limits<float>::infinity();
    }
  });
  pool.run(int64_t(n_heads) * n_chunks, [&](int64_t u, int) {
    const int h = int(u / n_chunks);
    const int32_t c = int32_t(u % n_chunks), g0 = c * (kChunk / 16), g1 = std::min(ng, g0 + kChunk / 16);
    const float mx = *std::max_element(M + int64_t(h) * n_chunks, M + int64_t(h + 1) * n_chunks);
    exp_groups(S + size_t(h) * Lp, L, mx, g0, g1, 1, G + size_t(h) * ng);
  });
  pool.run(int64_t(n_kv) * 4, [&](int64_t u, int) {
    const int g = int(u / 4), qt = int(u % 4);
    for (int h = g * group; h < (g + 1) * group; ++h)
      accumulate_lanes<E>(S + size_t(h) * Lp, inv_sum(G + size_t(h) * ng, ng), kv, rows + size_t(g) * L, L, 64, 16 * qt,
                          16 * qt + 16, A + size_t(h) * 64 * hd, lo);
  });
  for (int h = 0; h < n_heads; ++h)
    reduce_lanes(A + size_t(h) * 64 * hd, hd, 64, int(std::min<int32_t>(L, 64)), out + size_t(h) * hd);
}

template <class E>
void attention_t(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv,
                 float* out, ThreadPool& pool, int window, float softcap) {
  const int hd = kv.head_dim;
  const int group = n_heads / kv.n_kv_heads;
  // ggml picks tinyBLAS when its batch has >= 2 tokens: a prompt. Here the choice is per token
  // (StepPlan::in_prompt), so a sequence's results do not depend on what shares its steps or how
  // its prompt was cut into chunks. (A plan made by hand without in_prompt: the token's slice has
  // >= 2 tokens.)
  auto prompt = [&](int64_t t) {
    const int32_t seq = plan.token_seq[size_t(t)];
    return plan.in_prompt.empty()
               ? (t > 0 && plan.token_seq[size_t(t - 1)] == seq) || (t + 1 < n && plan.token_seq[size_t(t + 1)] == seq)
               : plan.in_prompt[size_t(t)] != 0;
  };
  auto blocks_of = [&](int64_t t) { return plan.block_ids.data() + plan.block_begin[plan.token_seq[size_t(t)]]; };
  // The first position token t sees: its window's start (transformers' sliding-window mask).
  auto first_seen = [&](int64_t t) {
    return window > 0 ? std::max<int32_t>(0, plan.positions[size_t(t)] + 1 - window) : 0;
  };
  // One decode token over a long context: split each head over the pool (attend_split).
  constexpr int32_t kSplitMin = 3072;  // measured: below it the per-head tasks are faster (docs/notes/cpu-numerics.md)
  if (n == 1 && !prompt(0) && plan.positions[0] + 1 >= kSplitMin && pool.size() > 1) {
    attend_split<E>(q, n_heads, group, scale, softcap, blocks_of(0), plan.positions[0] + 1, first_seen(0), kv, out,
                    pool);
    return;
  }
  pool.run(n * n_heads, [&](int64_t u, int) {
    thread_local HeadScratch w;  // grows once per thread, then reused
    const int64_t t = u / n_heads;
    const int h = int(u % n_heads);
    HeadTask T;
    T.q = q + (t * n_heads + h) * hd;
    T.out = out + (t * n_heads + h) * hd;
    T.blocks = blocks_of(t);
    T.len = plan.positions[size_t(t)] + 1;
    T.lo = first_seen(t);
    T.g = h / group;
    T.scale = scale;
    T.cap = softcap;
    T.prompt = prompt(t);
    attend_head<E>(T, kv, w);
  });
}

}  // namespace

void attention(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv, float* out,
               ThreadPool& pool, int window, float softcap) {
  switch (kv.dtype) {
    case DType::F16: return attention_t<KvF16>(q, n, n_heads, scale, plan, kv, out, pool, window, softcap);
    case DType::BF16: return attention_t<KvBF16>(q, n, n_heads, scale, plan, kv, out, pool, window, softcap);
    case DType::F8_E4M3: return attention_t<KvFP8>(q, n, n_heads, scale, plan, kv, out, pool, window, softcap);
    default: throw Error("cpu attention: no KV cache of " + std::string(dtype_name(kv.dtype)));
  }
}

}  // namespace greta::cpu
