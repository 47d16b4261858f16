// Causal attention over the paged F16 KV cache, in llama.cpp's arithmetic.
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
// 256-bit vectors only: 512-bit FMAs here lowered the core clock enough to slow the (256-bit)
// quantized matmuls around them by ~3% of a decode step on this Xeon.
//
// Work is split over (token, head) pairs; each is computed by one thread from start to end,
// so results do not depend on the thread count. Memory per task: the scores of one head
// (O(context)) and a [lanes, head_dim] accumulator.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"

namespace greta::cpu {
namespace {

inline float h2f(uint16_t h) {
#ifdef GRETA_AVX2
  return _cvtsh_ss(h);
#else
  return fp16_to_float(h);
#endif
}
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

// fp16 dot product of x (fp16 values held as floats) and y (fp16 bits), n elements, in one of
// ggml's two shapes (see the top of the file). Scalar reference of the vector path below.
float dot_scalar(const float* x, const uint16_t* y, int n, bool tiny) {
  if (tiny) {  // n % 16 == 0
    float acc[16] = {};
    for (int i = 0; i < n; ++i) acc[i % 16] += x[i] * h2f(y[i]);
    return reduce16_scalar(acc);
  }
  const int np = n & ~63;
  double sum = 0.0;
  if (np) {
    float acc[64] = {}, f[16];
    for (int i = 0; i < np; ++i) acc[i % 64] += x[i] * h2f(y[i]);
    fold64(acc, f);
    sum = reduce16_scalar(f);
  }
  for (int i = np; i < n; ++i) sum += double(x[i] * h2f(y[i]));
  return float(sum);
}

#ifdef GRETA_AVX2
inline __m256 load_h8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// dot_scalar for n % 16 == 0, 16 lanes as two 8-float vectors. Always inlined: it runs once per
// (position, head), and a call per position cost a third of attention's time.
__attribute__((always_inline)) inline float dot_vec(const float* __restrict x, const uint16_t* __restrict y, int n,
                                                    bool tiny) {
  if (tiny) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 16) {
      lo = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_h8(y + i), lo);
      hi = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_h8(y + i + 8), hi);
    }
    return reduce16(lo, hi);
  }
  const int np = n & ~63;
  double sum = 0.0;
  if (np) {
    __m256 a[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 64)
      for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * r), load_h8(y + i + 8 * r), a[r]);
    // accumulator r/2 of ggml (16 lanes = vectors 2r/2 and 2r/2 + 1): (0 + 2) + (1 + 3)
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    sum = reduce16(lo, hi);
  }
  for (int i = np; i < n; ++i) sum += double(x[i] * h2f(y[i]));
  return float(sum);
}
#endif  // GRETA_AVX2

// --- the pieces of one head's attention (the order described at the top) ---

// Element offsets of the K/V rows of positions [0, len) of kv head g, through the block table.
void row_offsets(const int32_t* blocks, int32_t len, int g, const KVLayer& kv, size_t* offs) {
  const int bs = kv.block_size;
  const size_t row = size_t(kv.n_kv_heads) * kv.head_dim;
  for (int32_t j0 = 0; j0 < len; j0 += bs) {
    const size_t base = size_t(blocks[j0 / bs]) * bs * row + size_t(g) * kv.head_dim;
    for (int32_t j = j0; j < std::min(len, j0 + bs); ++j) offs[size_t(j)] = base + size_t(j - j0) * row;
  }
}

// s[j] = (q . k_j) * scale for j in [j0, j1), soft-capped when cap > 0; returns their max. qf: q
// rounded to fp16.
template <bool TINY, bool VEC>
float scores_t(const float* __restrict qf, const uint16_t* __restrict k, const size_t* __restrict offs, int hd,
               int32_t j0, int32_t j1, float scale, float cap, float* __restrict s) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t j = j0; j < j1; ++j) {
#ifdef GRETA_AVX2
    const float d = VEC ? dot_vec(qf, k + offs[j], hd, TINY) : dot_scalar(qf, k + offs[j], hd, TINY);
#else
    const float d = dot_scalar(qf, k + offs[j], hd, TINY);
#endif
    s[j] = cap > 0.0f ? softcap(d * scale, cap) : d * scale;
    mx = std::max(mx, s[j]);
  }
  return mx;
}

float scores(const float* qf, const KVLayer& kv, const size_t* offs, int32_t j0, int32_t j1, bool tiny, float scale,
             float cap, float* s) {
  const int hd = kv.head_dim;
  if (hd % 16 == 0)
    return tiny ? scores_t<true, true>(qf, kv.k, offs, hd, j0, j1, scale, cap, s)
                : scores_t<false, true>(qf, kv.k, offs, hd, j0, j1, scale, cap, s);
  return tiny ? scores_t<true, false>(qf, kv.k, offs, hd, j0, j1, scale, cap, s)
              : scores_t<false, false>(qf, kv.k, offs, hd, j0, j1, scale, cap, s);
}

// q rounded to fp16 as the scores take it, and the scale left to apply to q . k: with a soft cap
// q is scaled first (see the top of the file).
float prepare_q(const float* q, int count, float scale, float cap, float* qf) {
  const float qs = cap > 0.0f ? scale : 1.0f;
  for (int i = 0; i < count; ++i) qf[i] = round_fp16(q[i] * qs);
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

// A[l] (one row of hd floats per lane) = sum over positions j = l, l + lanes, ... < L of p_j v_j,
// in position order, for lanes [l0, l1), with p_j = fp16(e_j * inv) formed on the fly (each
// position is read by one lane; nothing is written back to e). Lanes no position reaches are
// left alone. Positions below lo (outside a sliding window: p_j = 0) are skipped.
void accumulate_lanes(const float* e, float inv, const KVLayer& kv, const size_t* offs, int32_t L, int lanes, int l0,
                      int l1, float* A, int32_t lo = 0) {
  const int hd = kv.head_dim;
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
        const uint16_t* v = kv.v + offs[j] + d0;
        const __m256 pv = _mm256_set1_ps(round_fp16(e[j] * inv));
        for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(pv, load_h8(v + 8 * r), a[r]);
      }
      for (int r = 0; r < 8; ++r) _mm256_storeu_ps(a_row + d0 + 8 * r, a[r]);
    }
#endif
    if (d0 == hd) continue;
    std::fill(a_row + d0, a_row + hd, 0.0f);
    for (int32_t j = first(l); j < L; j += lanes) {
      const uint16_t* v = kv.v + offs[j];
      const float p = round_fp16(e[j] * inv);
      int i = d0;
#ifdef GRETA_AVX2
      const __m256 pv = _mm256_set1_ps(p);
      for (; i + 8 <= hd; i += 8)
        _mm256_storeu_ps(a_row + i, _mm256_fmadd_ps(pv, load_h8(v + i), _mm256_loadu_ps(a_row + i)));
#endif
      for (; i < hd; ++i) a_row[i] += p * h2f(v[i]);
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
  std::vector<size_t> offs;
};

void attend_head(const HeadTask& T, const KVLayer& kv, HeadScratch& w) {
  const int hd = kv.head_dim;
  const bool kq_tiny = T.prompt && hd % 16 == 0, kqv_tiny = T.prompt && hd % 4 == 0;
  const int lanes = kqv_tiny ? 16 : 64;
  const int32_t L = T.len, ng = (L + 15) / 16;
  if (w.offs.size() < size_t(L)) w.offs.resize(size_t(L));
  if (w.s.size() < size_t(16 * ng)) w.s.resize(size_t(16 * ng)), w.gsum.resize(size_t(ng));
  if (w.acc.size() < size_t(lanes) * hd) w.acc.resize(size_t(lanes) * hd);
  if (w.q.size() < size_t(hd)) w.q.resize(size_t(hd));
  row_offsets(T.blocks, L, T.g, kv, w.offs.data());
  // q rounded to fp16 (ggml converts the f32 activations to the F16 cache's vec_dot type).
  const float kq_scale = prepare_q(T.q, hd, T.scale, T.cap, w.q.data());
  float* s = w.s.data();
  // Positions before the window: score -inf, softmax weight exactly 0 (exp_ggml(-inf) = 0).
  std::fill(s, s + T.lo, -std::numeric_limits<float>::infinity());
  const float mx = scores(w.q.data(), kv, w.offs.data(), T.lo, L, kq_tiny, kq_scale, T.cap, s);
  exp_groups(s, L, mx, 0, ng, 1, w.gsum.data());
  accumulate_lanes(s, inv_sum(w.gsum.data(), ng), kv, w.offs.data(), L, lanes, 0, lanes, w.acc.data(), T.lo);
  reduce_lanes(w.acc.data(), hd, lanes, int(std::min<int32_t>(L, lanes)), T.out);
}

// One decode token over a long context: the heads alone (9 on 2 threads for the default model)
// do not balance, so each head's work is cut in three passes over the pool, keeping every sum in
// the order above: (1) scores by chunks of positions, (2) exp and the 16-group sums by chunks of
// groups, (3) p and V^T p by quarters of the 64 lanes (the group sums added in order by each).
// Tasks write disjoint contiguous ranges (interleaved writes cost more in cache-line traffic
// than the work). The lanes are then reduced on the calling thread.
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
  size_t* offs = o_buf.data();
  for (int g = 0; g < n_kv; ++g) row_offsets(blocks, L, g, kv, offs + size_t(g) * L);
  const float kq_scale = prepare_q(q, n_heads * hd, scale, cap, Q);
  // Scores and V^T p tasks take the heads of one kv head together, so each chunk of K (V) rows is
  // read from memory once and from cache by the group's other heads.
  pool.run(int64_t(n_kv) * n_chunks, [&](int64_t u, int) {
    const int g = int(u / n_chunks);
    const int32_t c = int32_t(u % n_chunks), j0 = c * kChunk, j1 = std::min(L, j0 + kChunk);
    const int32_t js = std::min(j1, std::max(j0, lo));  // positions before the window: -inf
    for (int h = g * group; h < (g + 1) * group; ++h) {
      float* s = S + size_t(h) * Lp;
      std::fill(s + j0, s + js, -std::numeric_limits<float>::infinity());
      M[size_t(h) * n_chunks + c] = js < j1 ? scores(Q + size_t(h) * hd, kv, offs + size_t(g) * L, js, j1, false,
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
      accumulate_lanes(S + size_t(h) * Lp, inv_sum(G + size_t(h) * ng, ng), kv, offs + size_t(g) * L, L, 64, 16 * qt,
                       16 * qt + 16, A + size_t(h) * 64 * hd, lo);
  });
  for (int h = 0; h < n_heads; ++h)
    reduce_lanes(A + size_t(h) * 64 * hd, hd, 64, int(std::min<int32_t>(L, 64)), out + size_t(h) * hd);
}

}  // namespace

void attention(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv, float* out,
               ThreadPool& pool, int window, float softcap) {
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
    attend_split(q, n_heads, group, scale, softcap, blocks_of(0), plan.positions[0] + 1, first_seen(0), kv, out, pool);
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
    attend_head(T, kv, w);
  });
}

}  // namespace greta::cpu
