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
inline __m256 load_h8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

#ifdef GRETA_AVX512
inline __m512 load_h16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline float reduce16_512(__m512 v) { return reduce16(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)); }

// dot_scalar for n % 16 == 0: ggml's 16 lanes are one 512-bit vector.
inline float dot_vec(const float* x, const uint16_t* y, int n, bool tiny) {
  if (tiny) {
    __m512 a = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load_h16(y + i), a);
    return reduce16_512(a);
  }
  const int np = n & ~63;
  double sum = 0.0;
  if (np) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < np; i += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load_h16(y + i), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load_h16(y + i + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), load_h16(y + i + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), load_h16(y + i + 48), a3);
    }
    sum = reduce16_512(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
  }
  for (int i = np; i < n; ++i) sum += double(x[i] * h2f(y[i]));
  return float(sum);
}
#else
// dot_scalar for n % 16 == 0, 16 lanes as two 8-float vectors.
inline float dot_vec(const float* x, const uint16_t* y, int n, bool tiny) {
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
#endif  // GRETA_AVX512
#endif  // GRETA_AVX2

// One (token, head): scores, softmax and V^T p as described at the top.
struct HeadTask {
  const float* q;  // [hd] this head's query (rotated)
  float* out;      // [hd]
  const int32_t* blocks;
  int32_t len;  // positions 0..len-1
  int g;        // kv head
  float scale;
  bool batched;  // step has >= 2 tokens (ggml takes tinyBLAS where it can)
};

void attend_head(const HeadTask& T, const KVLayer& kv, std::vector<float>& sc, std::vector<float>& acc,
                 std::vector<size_t>& offs) {
  const int hd = kv.head_dim, bs = kv.block_size;
  const size_t row = size_t(kv.n_kv_heads) * hd;
  const bool kq_tiny = T.batched && hd % 16 == 0;
  const bool kqv_tiny = T.batched && hd % 4 == 0;
  const int lanes = kqv_tiny ? 16 : 64;
  // Element offset of each position's K/V row (through the block table), computed once.
  if (offs.size() < size_t(T.len)) offs.resize(size_t(T.len));
  for (int32_t j0 = 0; j0 < T.len; j0 += bs) {
    const size_t base = size_t(T.blocks[j0 / bs]) * bs * row + size_t(T.g) * hd;
    for (int32_t j = j0; j < std::min(T.len, j0 + bs); ++j) offs[size_t(j)] = base + size_t(j - j0) * row;
  }
  auto k_row = [&](int32_t j) { return kv.k + offs[size_t(j)]; };
  auto v_row = [&](int32_t j) { return kv.v + offs[size_t(j)]; };

  // q rounded to fp16 (ggml converts the f32 activations to the F16 cache's vec_dot type).
  float qh[512];
  std::vector<float> qbig;
  float* qf = qh;
  if (hd > 512) qbig.resize(size_t(hd)), qf = qbig.data();
  for (int i = 0; i < hd; ++i) qf[i] = round_fp16(T.q[i]);

  // Scores, padded with zeros to whole groups of 16 for the softmax sum.
  const int32_t L = T.len, Lp = (L + 15) / 16 * 16;
  if (sc.size() < size_t(Lp)) sc.resize(size_t(Lp));
  float* s = sc.data();
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t j = 0; j < L; ++j) {
#ifdef GRETA_AVX2
    const float d = hd % 16 == 0 ? dot_vec(qf, k_row(j), hd, kq_tiny) : dot_scalar(qf, k_row(j), hd, kq_tiny);
#else
    const float d = dot_scalar(qf, k_row(j), hd, kq_tiny);
#endif
    s[j] = d * T.scale;
    mx = std::max(mx, s[j]);
  }
  // Softmax: e = exp(s - max), summed per 16 positions in float, groups in double.
  double sum = 0.0;
  int32_t j = 0;
#ifdef GRETA_AVX2
  const __m256 mv = _mm256_set1_ps(mx);
  for (; j + 16 <= L; j += 16) {
    const __m256 lo = exp_ggml_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
    const __m256 hi = exp_ggml_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), mv));
    _mm256_storeu_ps(s + j, lo);
    _mm256_storeu_ps(s + j + 8, hi);
    sum += double(reduce16(lo, hi));
  }
#endif
  for (; j < Lp; j += 16) {
    for (int32_t i = j; i < j + 16; ++i) s[i] = i < L ? exp_ggml(s[i] - mx) : 0.0f;
    sum += double(reduce16_scalar(s + j));
  }
  const float inv = float(1.0 / sum);
  for (j = 0; j < L; ++j) s[j] = round_fp16(s[j] * inv);

  // out = V^T p: lane (j % lanes) accumulates p_j v_j in position order. Lanes that no position
  // reaches stay zero and are skipped in the reduction.
  const int used = int(std::min<int32_t>(L, lanes));
  if (acc.size() < size_t(lanes) * hd) acc.resize(size_t(lanes) * hd);
  float* A = acc.data();
  int d0 = 0;
#ifdef GRETA_AVX2
  // Lane by lane, 64 outputs at a time: the lane's accumulator stays in 8 registers while its
  // positions (l, l + lanes, l + 2 lanes, ...) stream past, in the same order as above.
  for (; d0 + 64 <= hd; d0 += 64)
    for (int l = 0; l < used; ++l) {
#ifdef GRETA_AVX512
      __m512 a[4];
      for (auto& r : a) r = _mm512_setzero_ps();
      for (int32_t jj = l; jj < L; jj += lanes) {
        const uint16_t* v = v_row(jj) + d0;
        const __m512 pv = _mm512_set1_ps(s[jj]);
        for (int r = 0; r < 4; ++r) a[r] = _mm512_fmadd_ps(pv, load_h16(v + 16 * r), a[r]);
      }
      for (int r = 0; r < 4; ++r) _mm512_storeu_ps(A + size_t(l) * hd + d0 + 16 * r, a[r]);
#else
      __m256 a[8];
      for (auto& r : a) r = _mm256_setzero_ps();
      for (int32_t jj = l; jj < L; jj += lanes) {
        const uint16_t* v = v_row(jj) + d0;
        const __m256 pv = _mm256_set1_ps(s[jj]);
        for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(pv, load_h8(v + 8 * r), a[r]);
      }
      for (int r = 0; r < 8; ++r) _mm256_storeu_ps(A + size_t(l) * hd + d0 + 8 * r, a[r]);
#endif
    }
#endif
  if (d0 < hd)
    for (int l = 0; l < used; ++l) std::fill(A + size_t(l) * hd + d0, A + size_t(l + 1) * hd, 0.0f);
  for (j = 0; d0 < hd && j < L; ++j) {
    float* a = A + size_t(j % lanes) * hd;
    const uint16_t* v = v_row(j);
    const float p = s[j];
    int i = d0;
#ifdef GRETA_AVX2
    const __m256 pv = _mm256_set1_ps(p);
    for (; i + 8 <= hd; i += 8) _mm256_storeu_ps(a + i, _mm256_fmadd_ps(pv, load_h8(v + i), _mm256_loadu_ps(a + i)));
#endif
    for (; i < hd; ++i) a[i] += p * h2f(v[i]);
  }
  // Reduce the lanes for each output element: 64 -> 16 (vec_dot only), then 16 -> 1.
  auto lane = [&](int l, int i) { return l < used ? A[size_t(l) * hd + i] : 0.0f; };
  int i0 = 0;
#ifdef GRETA_AVX2
  auto lv = [&](int l, int i) { return l < used ? _mm256_loadu_ps(A + size_t(l) * hd + i) : _mm256_setzero_ps(); };
  for (; i0 + 8 <= hd; i0 += 8) {
    __m256 f[16];
    for (int l = 0; l < 16; ++l)
      f[l] = lanes == 64 ? _mm256_add_ps(_mm256_add_ps(lv(l, i0), lv(l + 32, i0)), _mm256_add_ps(lv(l + 16, i0), lv(l + 48, i0)))
                         : lv(l, i0);
    for (int l = 0; l < 8; ++l) f[l] = _mm256_add_ps(f[l], f[l + 8]);
    for (int l = 0; l < 4; ++l) f[l] = _mm256_add_ps(f[l], f[l + 4]);
    _mm256_storeu_ps(T.out + i0, _mm256_add_ps(_mm256_add_ps(f[0], f[2]), _mm256_add_ps(f[1], f[3])));
  }
#endif
  for (int i = i0; i < hd; ++i) {
    float f[16];
    if (lanes == 64) {
      for (int l = 0; l < 16; ++l) f[l] = (lane(l, i) + lane(l + 32, i)) + (lane(l + 16, i) + lane(l + 48, i));
    } else {
      for (int l = 0; l < 16; ++l) f[l] = lane(l, i);
    }
    T.out[i] = reduce16_scalar(f);
  }
}

}  // namespace

void attention(const float* q, int64_t n, int n_heads, float scale, const StepPlan& plan, const KVLayer& kv,
               float* out, ThreadPool& pool) {
  const int hd = kv.head_dim;
  const int group = n_heads / kv.n_kv_heads;
  pool.run(n * n_heads, [&](int64_t u, int) {
    thread_local std::vector<float> sc, acc;  // grow once per thread, then reused
    thread_local std::vector<size_t> offs;
    const int64_t t = u / n_heads;
    const int h = int(u % n_heads);
    HeadTask T;
    T.q = q + (t * n_heads + h) * hd;
    T.out = out + (t * n_heads + h) * hd;
    T.blocks = plan.block_ids.data() + plan.block_begin[plan.token_seq[size_t(t)]];
    T.len = plan.positions[size_t(t)] + 1;
    T.g = h / group;
    T.scale = scale;
    // ggml picks tinyBLAS when its batch has >= 2 tokens: a prompt. Here the choice is per token
    // (StepPlan::in_prompt), so a sequence's results do not depend on what shares its steps or
    // how its prompt was cut into chunks.
    // (A plan made by hand without in_prompt: the token's slice has >= 2 tokens.)
    const int32_t seq = plan.token_seq[size_t(t)];
    T.batched = plan.in_prompt.empty() ? (t > 0 && plan.token_seq[size_t(t - 1)] == seq) ||
                                             (t + 1 < n && plan.token_seq[size_t(t + 1)] == seq)
                                       : plan.in_prompt[size_t(t)] != 0;
    attend_head(T, kv, sc, acc, offs);
  });
}

}  // namespace greta::cpu
