// Small SIMD helpers shared by the CPU kernels (internal). Everything here has a scalar
// equivalent in the kernels' #else branches.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GRETA_AVX2 1
#include <immintrin.h>
#endif
#if defined(GRETA_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__)
#define GRETA_AVX512 1
#endif
#if defined(GRETA_AVX2) && ((defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__))
#define GRETA_VNNI 1
#endif

namespace greta::cpu {

#ifdef GRETA_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// acc + sum over groups of 4 bytes of u[i]*s[i] (u unsigned, s signed), per 32-bit lane.
// Without VNNI, maddubs saturates int16 pairs: callers keep |u*s| pairs below 32767
// (u <= 128 with |s| <= 127 is safe).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// The 32 bits at p (a little-endian u32) as 32 bytes: byte i is 0xff where bit i is set, else 0.
inline __m256i bits_to_bytes(const uint8_t* p) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  // Bytes 8g .. 8g+7 take source byte g (shuffles stay within 128-bit halves; both hold u),
  // then each keeps its own bit.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int32_t(u)), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// 16 bytes of packed nibbles at p as 32 bytes: the low nibbles of bytes 0..15, then their high nibbles.
inline __m256i nibbles_to_bytes(const uint8_t* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

// exp(x), inputs clamped to [-87.3, 88.3]; relative error ~2e-7. Range reduction
// x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r (Cephes' coefficients).
inline __m256 exp_ps(__m256 x) {
  const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
  r = _mm256_fnmadd_ps(n, ln2_lo, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

// exp(x) computed exactly as llama.cpp's CPU backend computes it in softmax and SiLU
// (ggml_v_expf, its AVX-512 variant; the build the parity tests compare with): x = n ln2 + b
// with n = round(x / ln2) by the 1.5*2^23 shift, b reduced with a two-part ln2, a degree-5
// polynomial, then j * 2^n (scalef). Relative error ~1.5 ulp; the point is not accuracy but
// giving the same float for the same input, so greedy tokens follow llama.cpp's through
// near-ties. Results are 0 / inf once |n| > 192 (x beyond about +-133).
inline float exp_ggml(float x) {
  const float r = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, r);
  const float n = z - r;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  if (!(std::fabs(n) <= 192.0f)) return std::isnan(x) ? x : (n <= 0.0f ? 0.0f : INFINITY);
  const float u = b * b;
  const float j = std::fma(
      std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
      std::fma(0x1.ffffecp-1f, b, 1.0f));
  return std::ldexp(j, int(n));  // exact, or correctly rounded to a subnormal like scalef
}

#ifdef GRETA_AVX2
// exp_ggml on 8 lanes. j * 2^n is formed by adding n to j's exponent, which is exact while
// the result is normal (|n| <= 125, j in [0.7, 1.5)); lanes of a vector outside that range
// (rare: scores 87 below the max, |silu input| > 87) go through the scalar function.
inline __m256 exp_ggml_ps(__m256 x) {
  const __m256 r = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                    _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256 big = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n), _mm256_set1_ps(125.0f), _CMP_NLE_UQ);
  if (_mm256_movemask_ps(big)) {
    alignas(32) float v[8];
    _mm256_store_ps(v, x);
    for (float& e : v) e = exp_ggml(e);
    return _mm256_load_ps(v);
  }
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
      u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
  // z's low mantissa bits hold n (the shift put it there): n << 23 added to j's exponent.
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(j), _mm256_slli_epi32(_mm256_castps_si256(z), 23)));
}

// Sum of 16 lanes (two vectors: lanes 0-7, 8-15) in the order of GCC's _mm512_reduce_add_ps,
// which llama.cpp's fp16 dot products, tinyBLAS and softmax end with: lanes i + (i+8), then
// i + (i+4), i + (i+2), 0 + 1.
inline float reduce16(__m256 lo, __m256 hi) { return hsum(_mm256_add_ps(lo, hi)); }
#endif

}  // namespace greta::cpu
