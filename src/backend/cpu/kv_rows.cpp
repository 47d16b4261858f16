// Writing and reading rows of the CPU KV cache (kv_rows.h).
#include "backend/cpu/kv_rows.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace greta::cpu {
namespace {

// fp16 rounded to nearest even (as ggml's set_rows into an F16 cache).
void to_fp16(const float* x, uint16_t* h, int n) {
  int i = 0;
#ifdef GRETA_AVX2
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) h[i] = float_to_fp16(x[i]);
}

// One row of e4m3 codes and its scale (kv_rows.h). amax is taken over |x| with NaN ignored by the
// comparison, so a NaN value stays a NaN code (0x7f) instead of poisoning the row's scale.
float to_fp8_row(const float* x, uint8_t* q, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0.0f) {
    std::fill(q, q + n, uint8_t(0));
    return 0.0f;
  }
  const float scale = amax / 448.0f;
  for (int i = 0; i < n; ++i) q[i] = float_to_fp8_e4m3(x[i] / scale);
  return scale;
}

}  // namespace

void store_kv_rows(DType dtype, const float* x, int n_kv, int hd, void* pool, float* scales, int64_t slot) {
  const size_t row0 = size_t(slot) * size_t(n_kv);
  switch (dtype) {
    case DType::F16: to_fp16(x, static_cast<uint16_t*>(pool) + row0 * hd, n_kv * hd); return;
    case DType::BF16: {
      uint16_t* dst = static_cast<uint16_t*>(pool) + row0 * hd;
      for (int i = 0; i < n_kv * hd; ++i) dst[i] = float_to_bf16(x[i]);
      return;
    }
    case DType::F8_E4M3:
      for (int h = 0; h < n_kv; ++h)
        scales[row0 + size_t(h)] = to_fp8_row(x + size_t(h) * hd, static_cast<uint8_t*>(pool) + (row0 + size_t(h)) * hd,
                                              hd);
      return;
    default: break;
  }
  throw Error("cpu KV cache: no rows of " + std::string(dtype_name(dtype)));
}

void load_kv_row(DType dtype, const void* pool, const float* scales, int64_t row, int hd, float* out) {
  const size_t at = size_t(row) * size_t(hd);
  switch (dtype) {
    case DType::F16:
      for (int i = 0; i < hd; ++i) out[i] = KvF16::get(static_cast<const uint16_t*>(pool) + at, i);
      return;
    case DType::BF16:
      for (int i = 0; i < hd; ++i) out[i] = KvBF16::get(static_cast<const uint16_t*>(pool) + at, i);
      return;
    case DType::F8_E4M3: {
      const float f = KvFP8::row_factor(scales[row]);
      for (int i = 0; i < hd; ++i) out[i] = KvFP8::get(static_cast<const uint8_t*>(pool) + at, i) * f;
      return;
    }
    default: break;
  }
  throw Error("cpu KV cache: no rows of " + std::string(dtype_name(dtype)));
}

}  // namespace greta::cpu
