// Matmul with the block types of Hugging Face quantized checkpoints (F8_B64, I4_G32/64/128):
// out [n, m] = x [n, k] @ dequantize(w)^T + bias, with float activations. Weights are decoded in
// registers, 32 values at a time, and multiplied into a per-block float sum that is scaled once
// per block; nothing is dequantized ahead of time. Keeping x in float (not int8 blocks as the GGML
// formats do) makes the result the checkpoint's own weights times x, which is what its reference
// implementations compute and what the e2e tests compare against.
//   F8_B64: e4m3 byte e placed in a float's bit pattern as ((e & 0x7f) << 20 | sign << 31) is
//           fp8(e) * 2^-120, normal and subnormal alike, so one exact multiply by 2^120 decodes it
//           (done per value, before the product with x, which could otherwise underflow).
//   I4_G*:  nibbles -> bytes (as Q4_0), minus the zero point z as int8 (-16..15), -> float.
// Without AVX2 the reference path (dequantize a row, then dot) runs instead.
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"
#include "core/error.h"
#include "core/quant_blocks.h"

namespace greta::cpu {

#ifdef GRETA_AVX2
namespace {

struct DecF8 {
  static constexpr int kBlock = 64;
  static constexpr size_t kBytes = sizeof(BlockF8_64);
  static float scale(const uint8_t* blk) {
    float s;
    std::memcpy(&s, blk, 4);
    return s;
  }
  // Values 32c .. 32c+31 of the block, unscaled.
  static void chunk(const uint8_t* blk, int c, __m256 (&w)[4]) {
    const uint8_t* q = blk + 4 + 32 * c;
    for (int v = 0; v < 4; ++v) {
      const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * v)));
      const __m256i bits = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7f)), 20),
                                           _mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x80)), 24));
      w[v] = _mm256_mul_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(0x1p120f));
    }
  }
};

template <int G>
struct DecI4 {
  static constexpr int kBlock = G;
  static constexpr size_t kBytes = sizeof(BlockI4<G>);
  static float scale(const uint8_t* blk) {
    uint16_t d;
    std::memcpy(&d, blk, 2);
    return _cvtsh_ss(d);
  }
  static void chunk(const uint8_t* blk, int c, __m256 (&w)[4]) {
    const __m256i q = _mm256_sub_epi8(nibbles_to_bytes(blk + 4 + 16 * c), _mm256_set1_epi8(int8_t(blk[2])));
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    w[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    w[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
  }
};

// One weight row against NX activation rows: res[j] = row . x[j].
template <class Dec, int NX>
void row_dot(const uint8_t* row, const float* x, int64_t k, float* res) {
  constexpr int B = Dec::kBlock;
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / B; ++b) {
    const uint8_t* blk = row + size_t(b) * Dec::kBytes;
    __m256 part[NX];
    for (int j = 0; j < NX; ++j) part[j] = _mm256_setzero_ps();
    for (int c = 0; c < B / 32; ++c) {
      __m256 w[4];
      Dec::chunk(blk, c, w);
      const int64_t off = b * B + 32 * c;
      for (int j = 0; j < NX; ++j)
        for (int v = 0; v < 4; ++v) part[j] = _mm256_fmadd_ps(w[v], _mm256_loadu_ps(x + j * k + off + 8 * v), part[j]);
    }
    const __m256 s = _mm256_set1_ps(Dec::scale(blk));
    for (int j = 0; j < NX; ++j) acc[j] = _mm256_fmadd_ps(part[j], s, acc[j]);
  }
  for (int j = 0; j < NX; ++j) res[j] = hsum(acc[j]);
}

template <class Dec>
void run(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
  const int64_t m = w.n_out, k = w.n_in;
  const int64_t target = std::max<int64_t>(1, int64_t(pool.size()) * 4);
  const int64_t chunk = std::max<int64_t>(16, (m + target - 1) / target + 15) / 16 * 16;
  const int64_t n4 = n / 4 * 4;
  pool.run((m + chunk - 1) / chunk, [&](int64_t c, int) {
    float res[4];
    for (int64_t r = c * chunk; r < std::min(m, (c + 1) * chunk); ++r) {
      const uint8_t* row = w.data + size_t(r) * w.row_stride;
      const float b = bias ? bias[r] : 0.0f;
      for (int64_t x0 = 0; x0 < n4; x0 += 4) {
        row_dot<Dec, 4>(row, x + x0 * k, k, res);
        for (int j = 0; j < 4; ++j) out[(x0 + j) * m + r] = res[j] + b;
      }
      for (int64_t x0 = n4; x0 < n; ++x0) {
        row_dot<Dec, 1>(row, x + x0 * k, k, res);
        out[x0 * m + r] = res[0] + b;
      }
    }
  });
}

}  // namespace
#endif

void matmul_hf_quant(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
#ifdef GRETA_AVX2
  switch (w.dtype) {
    case DType::F8_B64: return run<DecF8>(x, n, w, bias, out, pool);
    case DType::I4_G32: return run<DecI4<32>>(x, n, w, bias, out, pool);
    case DType::I4_G64: return run<DecI4<64>>(x, n, w, bias, out, pool);
    case DType::I4_G128: return run<DecI4<128>>(x, n, w, bias, out, pool);
    default: break;
  }
  throw Error("cpu matmul: weight dtype " + std::string(dtype_name(w.dtype)) + " is not a Hugging Face block type");
#else
  matmul_dequant(x, n, w, bias, out, pool);
#endif
}

}  // namespace greta::cpu
