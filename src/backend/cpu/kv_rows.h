// The rows of the CPU backend's paged KV cache (internal): one (token, kv head) row of head_dim
// values in the cache's element type, written once when the token's K and V are computed
// (store_kv_rows) and decoded where attention reads them (the element readers below).
//   F16     : IEEE half, rounded to nearest even (llama.cpp's default cache; attention.cpp
//             follows its arithmetic on it).
//   BF16    : bfloat16, rounded to nearest even.
//   F8_E4M3 : e4m3 values and one float scale per row, chosen when the row is written:
//             scale = amax / 448 (448 the largest e4m3), code = e4m3(x / scale) rounded to nearest
//             even and saturating, x ~= scale * e4m3(code). A row of zeros has scale 0. No
//             calibration and no overflow; why per row: docs/notes/kv-cache-fp8.md.
//
// Readers: E::load8(p) (AVX2) and E::get(p, i) give values of a row as floats, E::kRowScaled says
// whether they still have to be multiplied by E::row_factor(scale) -- the row's scale, with
// whatever constant the decode left out folded in -- so attention applies the scale once per
// (row, query) instead of once per value.
#pragma once
#include <cstdint>

#include "backend/cpu/simd.h"
#include "core/dtype.h"

namespace greta::cpu {

// One token's n_kv rows of hd values (x [n_kv * hd]) into a pool of `dtype` elements at row
// index slot * n_kv (values at element row * hd; F8_E4M3: scales[row] too).
void store_kv_rows(DType dtype, const float* x, int n_kv, int hd, void* pool, float* scales, int64_t slot);

// One row back to floats (scale applied): what attention reads, for tests and references.
void load_kv_row(DType dtype, const void* pool, const float* scales, int64_t row, int hd, float* out);

// e4m3 bits -> the fp16 bits of e4m3 * 2^-8: same sign, exponent and mantissa moved into fp16's
// wider fields; the bias difference (15 - 7) is the 2^-8, and e4m3 subnormals land exactly on
// fp16 subnormals. Exact for every code but NaN (0x7f / 0xff), which store_kv_rows never writes.
inline uint16_t e4m3_to_half_bits(uint8_t b) { return uint16_t((b & 0x80) << 8 | (b & 0x7f) << 7); }

inline float half_to_float(uint16_t h) {
#ifdef GRETA_AVX2
  return _cvtsh_ss(h);
#else
  return fp16_to_float(h);
#endif
}

struct KvF16 {
  using T = uint16_t;
  static constexpr bool kRowScaled = false;
  static float get(const T* p, int i) { return half_to_float(p[i]); }
#ifdef GRETA_AVX2
  static __m256 load8(const T* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#endif
};

struct KvBF16 {
  using T = uint16_t;
  static constexpr bool kRowScaled = false;
  static float get(const T* p, int i) { return bf16_to_float(p[i]); }
#ifdef GRETA_AVX2
  static __m256 load8(const T* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
#endif
};

// Values come out as e4m3 * 2^-8 (through fp16, see e4m3_to_half_bits); row_factor puts the 2^8
// back into the scale, an exact power-of-two step.
struct KvFP8 {
  using T = uint8_t;
  static constexpr bool kRowScaled = true;
  static float row_factor(float scale) { return scale * 256.0f; }
  static float get(const T* p, int i) { return half_to_float(e4m3_to_half_bits(p[i])); }
#ifdef GRETA_AVX2
  static __m256 load8(const T* p) {
    // Sign-extended to 16 bits, a byte s.eeee.mmm shifted left 7 puts s at bit 15 and the
    // magnitude at bits 7-13; bit 14 holds a copy of s, cleared.
    const __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(int16_t(0xbfff))));
  }
#endif
};

}  // namespace greta::cpu
