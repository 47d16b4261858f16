// Row-wise and elementwise ops: rms_norm, add, silu_mul, gelu_mul, scale, softcap. At decode
// sizes (one row of a few thousand floats) these take well under a microsecond, so they only go to the thread pool
// when there is enough work to pay for the dispatch.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"
#include "core/dtype.h"

namespace greta::cpu {
namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements below which one thread is faster
constexpr int64_t kElemChunk = 1 << 13;    // elements per task for flat ops (multiple of 16)

template <class F>
void for_chunks(int64_t count, ThreadPool& pool, F&& f) {
  if (count < kParallelMin) {
    f(int64_t(0), count);
    return;
  }
  pool.run((count + kElemChunk - 1) / kElemChunk, [&](int64_t t, int) {
    const int64_t b = t * kElemChunk;
    f(b, std::min(count, b + kElemChunk));
  });
}

// llama.cpp's order (ggml rms_norm then mul): the squares are rounded to float and summed in
// double, mean = float(sum / dim), scale = 1 / sqrtf(mean + eps) in float, y = (x * scale) * w.
// The double sum is vectorized (4 partial sums); it equals ggml's sequential double sum to
// ~1e-16 relative, so the float mean is the same except in vanishingly rare ties.
void rms_norm_row(const float* x, const float* w, float eps, float* out, int64_t dim) {
  int64_t i = 0;
  double ss = 0.0;
#ifdef GRETA_AVX2
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  for (; i + 8 <= dim; i += 8) {
    const __m256 a = _mm256_loadu_ps(x + i);
    const __m256 sq = _mm256_mul_ps(a, a);  // float products, as ggml's x[i]*x[i]
    acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
    acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(acc0, acc1));
  ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
  for (; i < dim; ++i) {
    const float sq = x[i] * x[i];
    ss += double(sq);
  }
  const float mean = float(ss / double(dim));
  const float scale = 1.0f / std::sqrt(mean + eps);
  i = 0;
#ifdef GRETA_AVX2
  const __m256 sv = _mm256_set1_ps(scale);
  for (; i + 8 <= dim; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(w + i)));
#endif
  for (; i < dim; ++i) {
    const float y = x[i] * scale;
    out[i] = y * w[i];
  }
}

}  // namespace

void rms_norm(const float* x, const float* w, float eps, float* out, int64_t n, int64_t dim, ThreadPool& pool) {
  if (n * dim < kParallelMin) {
    for (int64_t r = 0; r < n; ++r) rms_norm_row(x + r * dim, w, eps, out + r * dim, dim);
    return;
  }
  const int64_t rows_per_task = std::max<int64_t>(1, kElemChunk / dim);
  pool.run((n + rows_per_task - 1) / rows_per_task, [&](int64_t t, int) {
    const int64_t r1 = std::min(n, (t + 1) * rows_per_task);
    for (int64_t r = t * rows_per_task; r < r1; ++r) rms_norm_row(x + r * dim, w, eps, out + r * dim, dim);
  });
}

void add(const float* a, const float* b, float* out, int64_t count, ThreadPool& pool) {
  for_chunks(count, pool, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#ifdef GRETA_AVX2
    for (; i + 8 <= i1; i += 8)
      _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
#endif
    for (; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

// silu(g) * up as llama.cpp computes it (ggml_vec_swiglu_f32): g / (1 + exp(0 - g)) with
// ggml's exp (exp_ggml), then one multiply.
void silu_mul(const float* gate, const float* up, float* out, int64_t count, ThreadPool& pool) {
  for_chunks(count, pool, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#ifdef GRETA_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= i1; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i);
      const __m256 e = exp_ggml_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < i1; ++i) {
      const float s = gate[i] / (1.0f + exp_ggml(0.0f - gate[i]));
      out[i] = s * up[i];
    }
  });
}

float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoef = 0.044715f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoef * x * x)));
}

// gelu(g) * up as llama.cpp computes it on the CPU (ggml_vec_geglu_f32 with GGML_GELU_FP16):
// g <= -10 gives 0, g >= 10 gives g * up; between, g is rounded to fp16 and looked up in a
// table of gelu_tanh over every fp16 value, itself rounded to fp16.
void gelu_mul(const float* gate, const float* up, float* out, int64_t count, ThreadPool& pool) {
  static const std::vector<float> table = [] {
    std::vector<float> t(1 << 16);
    for (size_t i = 0; i < t.size(); ++i) t[i] = fp16_to_float(float_to_fp16(gelu_tanh(fp16_to_float(uint16_t(i)))));
    return t;
  }();
  for_chunks(count, pool, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      if (g <= -10.0f) out[i] = 0.0f;
      else if (g >= 10.0f) out[i] = g * up[i];
      else out[i] = table[float_to_fp16(g)] * up[i];
    }
  });
}

void scale(const float* x, float s, float* out, int64_t count, ThreadPool& pool) {
  for_chunks(count, pool, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = x[i] * s;
  });
}

void softcap(const float* x, float cap, float* out, int64_t count, ThreadPool& pool) {
  for_chunks(count, pool, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = softcap(x[i], cap);
  });
}

}  // namespace greta::cpu
