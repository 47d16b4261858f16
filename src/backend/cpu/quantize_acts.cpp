// Activation quantization for the quantized matmuls: each row of x [n, k] becomes int8 quants
// in blocks of 32. The rounding is ggml's (llama.cpp's CPU backend quantizes activations to
// its Q8_0 / Q8_1 formats the same way), so both engines feed identical integers and scales to
// the block dot products and their logits agree to float summation order:
//   amax = max|x|, id = 127 / amax (float), q = round-to-nearest-even(x * id),
//   d = fp16(amax / 127)            -- the scale the dot product uses is the fp16 value,
//   s = fp16(float(amax / 127) * isum) -- Q8_1's precomputed d*sum(q), from the *unrounded* d.
// isum (the exact quant sum) is kept too for kernels that fold zero points with integers.
// Blocks of 32 serve K-quants too (their sub-blocks are 32 or 16 values), so one activation
// format covers every weight type.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"

namespace greta::cpu {
namespace {

// float -> nearest fp16 -> float: ggml stores its activation scales as fp16.
inline float fp16_round(float x) {
#ifdef GRETA_AVX2
  return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
#else
  return fp16_to_float(float_to_fp16(x));
#endif
}

}  // namespace

void quantize_act_row(const float* x, int64_t k, int8_t* q, ActBlock* blk) {
  for (int64_t b = 0; b < k / 32; ++b, x += 32, q += 32) {
#ifdef GRETA_AVX2
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    const float m = hmax(amax);
    const float d = m / 127.0f;
    const __m256 id = _mm256_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
    __m256i qi[4];
    for (int i = 0; i < 4; ++i) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));  // nearest even
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
    // Pack 32 int32 -> 32 int8 (values are within [-127, 127], no saturation happens).
    const __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]);
    const __m256i p23 = _mm256_packs_epi32(qi[2], qi[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    // packs work per 128-bit lane: restore element order 0..31.
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p);
    const int32_t isum = hsum_i32(sum);
#else
    float m = 0.0f;
    for (int i = 0; i < 32; ++i) m = std::fmax(m, std::fabs(x[i]));
    const float d = m / 127.0f;
    const float id = m > 0.0f ? 127.0f / m : 0.0f;
    int32_t isum = 0;
    for (int i = 0; i < 32; ++i) {
      q[i] = int8_t(std::lrintf(x[i] * id));
      isum += q[i];
    }
#endif
    blk[b].d = fp16_round(d);
    blk[b].s = fp16_round(d * float(isum));
    blk[b].isum = isum;
    blk[b].pad = 0;
  }
}

QuantActs quantize_acts(const float* x, int64_t n, int64_t k, Scratch& scratch, ThreadPool& pool) {
  const size_t qbytes = (size_t(n * k) + 63) & ~size_t(63);
  auto* base = static_cast<uint8_t*>(scratch.get(qbytes + size_t(n * (k / 32)) * sizeof(ActBlock)));
  auto* q = reinterpret_cast<int8_t*>(base);
  auto* blk = reinterpret_cast<ActBlock*>(base + qbytes);
  const int64_t rows_per_task = 16;
  pool.run((n + rows_per_task - 1) / rows_per_task, [&](int64_t t, int) {
    const int64_t r1 = std::min(n, (t + 1) * rows_per_task);
    for (int64_t r = t * rows_per_task; r < r1; ++r) quantize_act_row(x + r * k, k, q + r * k, blk + r * (k / 32));
  });
  return QuantActs{q, blk, n, k};
}

}  // namespace greta::cpu
