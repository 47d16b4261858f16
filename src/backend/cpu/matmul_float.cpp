// Matmul with plain-typed weights (F32, F16, BF16): out [n, m] = x [n, k] @ w^T + bias.
// Weights are converted to float in registers as they stream (F16C for fp16, a 16-bit shift
// for bf16) and FMA'd against float activations; nothing is converted ahead of time.
// Tiling and threading mirror matmul_quant.cpp: NW weight rows x NX activation rows per
// micro-kernel, output rows split over threads in 16-row-aligned chunks.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"
#include "core/error.h"
#include "core/host_tensor.h"

// GCC 12's AVX-512 headers build the unmasked intrinsics (_mm512_cvtph_ps, _mm512_castps512_ps256,
// ...) on a self-initialised "undefined" vector, and -Wmaybe-uninitialized reports that vector
// wherever they are inlined (GCC bug 105593, fixed in GCC 13's headers). Nothing here reads an
// uninitialised value; the warning is silenced for this file's kernels only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace greta::cpu {
namespace {

template <DType T>
inline float load1(const uint8_t* row, int64_t i) {
  if constexpr (T == DType::F32) {
    return reinterpret_cast<const float*>(row)[i];
  } else if constexpr (T == DType::F16) {
    return fp16_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
  } else {
    return bf16_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
  }
}

#ifdef GRETA_AVX2
template <DType T>
inline __m256 load8(const uint8_t* row, int64_t i) {
  if constexpr (T == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else if constexpr (T == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}
#endif

#ifdef GRETA_AVX512
template <DType T>
inline __m512 load16(const uint8_t* row, int64_t i) {
  if constexpr (T == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else if constexpr (T == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i)));
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}
#endif

template <DType T, int NW, int NX>
void tile(const uint8_t* w, size_t ws, const float* x, int64_t k, float* res) {
  int64_t i0 = 0;
#ifdef GRETA_AVX2
  __m256 acc[NW][NX];
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) acc[a][b] = _mm256_setzero_ps();
#ifdef GRETA_AVX512
  __m512 acc16[NW][NX];
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) acc16[a][b] = _mm512_setzero_ps();
  for (; i0 + 16 <= k; i0 += 16) {
    __m512 xv[NX];
    for (int b = 0; b < NX; ++b) xv[b] = _mm512_loadu_ps(x + b * k + i0);
    for (int a = 0; a < NW; ++a) {
      const __m512 wv = load16<T>(w + a * ws, i0);
      for (int b = 0; b < NX; ++b) acc16[a][b] = _mm512_fmadd_ps(wv, xv[b], acc16[a][b]);
    }
  }
  for (int a = 0; a < NW; ++a)  // fold the 16-wide sums into the 8-wide accumulators
    for (int b = 0; b < NX; ++b)
      acc[a][b] = _mm256_add_ps(_mm512_castps512_ps256(acc16[a][b]), _mm512_extractf32x8_ps(acc16[a][b], 1));
#endif
  for (; i0 + 8 <= k; i0 += 8) {
    __m256 xv[NX];
    for (int b = 0; b < NX; ++b) xv[b] = _mm256_loadu_ps(x + b * k + i0);
    for (int a = 0; a < NW; ++a) {
      const __m256 wv = load8<T>(w + a * ws, i0);
      for (int b = 0; b < NX; ++b) acc[a][b] = _mm256_fmadd_ps(wv, xv[b], acc[a][b]);
    }
  }
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) res[a * NX + b] = hsum(acc[a][b]);
#else
  for (int a = 0; a < NW * NX; ++a) res[a] = 0.0f;
#endif
  for (int a = 0; a < NW; ++a)  // scalar tail (all of it without AVX2)
    for (int b = 0; b < NX; ++b) {
      float s = 0.0f;
      for (int64_t i = i0; i < k; ++i) s += load1<T>(w + a * ws, i) * x[b * k + i];
      res[a * NX + b] += s;
    }
}

template <DType T>
void run_float(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
  const int64_t m = w.n_out, k = w.n_in;
  const size_t ws = w.row_stride;
  const int64_t target = std::max<int64_t>(1, int64_t(pool.size()) * 4);
  const int64_t chunk = std::max<int64_t>(16, (m + target - 1) / target + 15) / 16 * 16;
  const int64_t n4 = n / 4 * 4;
  pool.run((m + chunk - 1) / chunk, [&](int64_t c, int) {
    const int64_t r0 = c * chunk, r1 = std::min(m, r0 + chunk);
    float res[16];
    auto emit = [&](int64_t r, int64_t x0, int nw, int nx) {
      for (int i = 0; i < nw; ++i)
        for (int j = 0; j < nx; ++j) out[(x0 + j) * m + r + i] = res[i * nx + j] + (bias ? bias[r + i] : 0.0f);
    };
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t x0 = 0; x0 < n4; x0 += 4) {
        tile<T, 1, 4>(w.data + size_t(r) * ws, ws, x + x0 * k, k, res);
        emit(r, x0, 1, 4);
      }
    if (n4 < n) {
      int64_t r = r0;
      for (; r + 4 <= r1; r += 4) {
#ifdef GRETA_AVX2
        // Same reasoning as matmul_quant.cpp: keep the weight stream ahead of the compute.
        if (r + 12 <= r1)
          for (size_t off = 0; off < 4 * ws; off += 64)
            _mm_prefetch(reinterpret_cast<const char*>(w.data + size_t(r + 8) * ws) + off, _MM_HINT_T0);
#endif
        for (int64_t x0 = n4; x0 < n; ++x0) {
          tile<T, 4, 1>(w.data + size_t(r) * ws, ws, x + x0 * k, k, res);
          emit(r, x0, 4, 1);
        }
      }
      for (; r < r1; ++r)
        for (int64_t x0 = n4; x0 < n; ++x0) {
          tile<T, 1, 1>(w.data + size_t(r) * ws, ws, x + x0 * k, k, res);
          emit(r, x0, 1, 1);
        }
    }
  });
}

}  // namespace

void matmul_dequant(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
  const int64_t m = w.n_out, k = w.n_in;
  constexpr int64_t kRows = 16;
  pool.run((m + kRows - 1) / kRows, [&](int64_t c, int) {
    thread_local std::vector<float> row;  // one dequantized weight row; grows once per thread
    if (row.size() < size_t(k)) row.resize(size_t(k));
    const auto* rb = reinterpret_cast<const uint8_t*>(row.data());
    for (int64_t r = c * kRows; r < std::min(m, (c + 1) * kRows); ++r) {
      dequantize_row(w.dtype, w.data + size_t(r) * w.row_stride, row.data(), k);
      for (int64_t j = 0; j < n; ++j) {
        float res;
        tile<DType::F32, 1, 1>(rb, 0, x + j * k, k, &res);
        out[j * m + r] = res + (bias ? bias[r] : 0.0f);
      }
    }
  });
}

void matmul_float(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
  switch (w.dtype) {
    case DType::F32: return run_float<DType::F32>(x, n, w, bias, out, pool);
    case DType::F16: return run_float<DType::F16>(x, n, w, bias, out, pool);
    case DType::BF16: return run_float<DType::BF16>(x, n, w, bias, out, pool);
    default: break;
  }
  throw Error("cpu matmul: weight dtype " + std::string(dtype_name(w.dtype)) + " is not a float type");
}

}  // namespace greta::cpu

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic pop
#endif
