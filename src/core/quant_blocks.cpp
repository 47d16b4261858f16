// Reference quantizers and dequantize_row for GGML block formats (layouts in quant_blocks.h).
// Scalar on purpose: this is the definition the SIMD kernels of the CPU backend and the
// CUDA kernels are tested against; tools/check_dequant.py checks it against the gguf package.
#include "core/quant_blocks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/host_tensor.h"

namespace greta {
namespace {

inline float h2f(uint16_t h) { return fp16_to_float(h); }
inline int nearest(float v) { return int(std::lrintf(v)); }

// The 32-value formats quantize as llama.cpp's reference quantizers (ggml-quants.c,
// quantize_row_*_ref) do, operation for operation, so that a model quantized on load is the file
// llama.cpp's quantizer writes (tests/e2e/test_quantizer_parity.py): the levels come from the
// unrounded fp32 scale, and a level is the truncation of x / d + 1/2 (+ the offset), i.e. ties
// round up.

// Symmetric block of 32 with levels [0, 2*half): the value of largest magnitude (the first, if
// several) maps to level 0 (d = vmax / -half) so the whole signed range is used.
uint16_t quantize_sym32(const float* x, int half, uint8_t* q) {
  float vmax = 0.0f;
  for (int i = 0; i < kQK; ++i)
    if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
  const float d = vmax / float(-half);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const float offset = float(half) + 0.5f;
  for (int i = 0; i < kQK; ++i) q[i] = uint8_t(std::min(2 * half - 1, int(int8_t(x[i] * id + offset))));
  return float_to_fp16(d);
}

// Affine block of 32 with levels [0, nmax]: value = d * q + m, m = the block minimum.
void quantize_affine32(const float* x, int nmax, uint16_t* dh, uint16_t* mh, uint8_t* q) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kQK; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const float d = (hi - lo) / float(nmax);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *dh = float_to_fp16(d);
  *mh = float_to_fp16(lo);
  for (int i = 0; i < kQK; ++i) q[i] = uint8_t(std::min(nmax, int(int8_t((x[i] - lo) * id + 0.5f))));
}

// Low 4 bits of 32 quants: byte j holds element j (low nibble) and element j + 16 (high nibble).
void pack_nibbles32(const uint8_t* q, uint8_t* qs) {
  for (int i = 0; i < kQK / 2; ++i) qs[i] = uint8_t((q[i] & 0x0f) | ((q[i + 16] & 0x0f) << 4));
}
// Bit 4 of 32 quants: bit l of the little-endian u32 qh.
void pack_bit4_32(const uint8_t* q, uint8_t* qh) {
  std::memset(qh, 0, 4);
  for (int l = 0; l < kQK; ++l) qh[l / 8] |= uint8_t(((q[l] >> 4) & 1) << (l % 8));
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1 rows: symmetric, or affine where the block has an offset m; the
// fifth bit of the 5-bit formats goes to qh.
template <int kBits, class Block>
void quantize_small_blocks(const float* x, Block* y, int64_t n) {
  uint8_t q[kQK];
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    if constexpr (requires { y->m; }) quantize_affine32(x, (1 << kBits) - 1, &y[b].d, &y[b].m, q);
    else y[b].d = quantize_sym32(x, 1 << (kBits - 1), q);
    pack_nibbles32(q, y[b].qs);
    if constexpr (kBits == 5) pack_bit4_32(q, y[b].qh);
  }
}

// Q4_K / Q5_K super-block with quants in [0, nmax]: per sub-block of 32 a step and a
// non-negative offset, both quantized to 6 bits against the fp16 super-scales d and dmin.
// Writes d, dmin, the packed scales (see q4k_scale_min) and the 256 quants q.
void quantize_k_super(const float* x, int nmax, uint16_t* dh, uint16_t* mh, uint8_t* scales, uint8_t* q) {
  float scale[8], minv[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float lo = 0.0f, hi = x[32 * j];  // the format needs lo <= 0 (value = d*q - m, m >= 0)
    for (int i = 0; i < 32; ++i) {
      lo = std::min(lo, x[32 * j + i]);
      hi = std::max(hi, x[32 * j + i]);
    }
    scale[j] = (hi - lo) / float(nmax);
    minv[j] = -lo;
    max_scale = std::max(max_scale, scale[j]);
    max_min = std::max(max_min, minv[j]);
  }
  *dh = float_to_fp16(max_scale / 63.0f);
  *mh = float_to_fp16(max_min / 63.0f);
  const float d = h2f(*dh), dmin = h2f(*mh);
  uint8_t isc[8], imn[8];
  for (int j = 0; j < 8; ++j) {
    isc[j] = uint8_t(d > 0.0f ? std::clamp(nearest(scale[j] / d), 0, 63) : 0);
    imn[j] = uint8_t(dmin > 0.0f ? std::clamp(nearest(minv[j] / dmin), 0, 63) : 0);
  }
  std::memset(scales, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] |= isc[j];
      scales[j + 4] |= imn[j];
    } else {
      scales[j + 4] = uint8_t((isc[j] & 0x0f) | ((imn[j] & 0x0f) << 4));
      scales[j - 4] |= uint8_t((isc[j] >> 4) << 6);
      scales[j] |= uint8_t((imn[j] >> 4) << 6);
    }
  }
  for (int j = 0; j < 8; ++j) {
    const float sd = d * isc[j], sm = dmin * imn[j];
    for (int i = 0; i < 32; ++i) {
      const float v = x[32 * j + i] + sm;
      q[32 * j + i] = uint8_t(sd > 0.0f ? std::clamp(nearest(v / sd), 0, nmax) : 0);
    }
  }
}

// Low 4 bits of a K-quant super-block: bytes qs[32p .. 32p+32) hold sub-block 2p in their low
// nibbles and sub-block 2p+1 in their high nibbles.
void pack_k_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int p = 0; p < 4; ++p)
    for (int i = 0; i < 32; ++i) qs[32 * p + i] = uint8_t((q[64 * p + i] & 0x0f) | ((q[64 * p + 32 + i] & 0x0f) << 4));
}

// Values of a Q4_K / Q5_K super-block: sub-block j is d*sc_j*q - dmin*mn_j.
template <class Block>
void dequant_k_super(const Block& b, float* y) {
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  for (int j = 0; j < 8; ++j, y += 32) {
    uint8_t sc, mn;
    q4k_scale_min(j, b.scales, &sc, &mn);
    for (int l = 0; l < 32; ++l) y[l] = d * sc * float(k_quant(b, j, l)) - dmin * mn;
  }
}

// fp8 e4m3 -> float for all 256 bytes, built once.
const float* fp8_table() {
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[size_t(i)] = fp8_e4m3_to_float(uint8_t(i));
    return t;
  }();
  return table.data();
}

template <int G>
void dequant_i4(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockI4<G>*>(src);
  for (int64_t k = 0; k < n / G; ++k, y += G) {
    const float d = h2f(b[k].d), z = float(b[k].z);
    for (int l = 0; l < G; ++l) y[l] = d * (float(i4_quant(b[k].qs, l)) - z);
  }
}

}  // namespace

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    float amax = 0.0f;
    for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d > 0.0f ? 1.0f / d : 0.0f;
    y[b].d = float_to_fp16(d);
    // llama.cpp's roundf: ties away from zero (quantize_sym32's comment).
    for (int i = 0; i < kQK; ++i) y[b].qs[i] = int8_t(std::clamp(int(std::round(x[i] * id)), -127, 127));
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n) { quantize_small_blocks<4>(x, y, n); }
void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n) { quantize_small_blocks<4>(x, y, n); }
void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n) { quantize_small_blocks<5>(x, y, n); }
void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n) { quantize_small_blocks<5>(x, y, n); }

void quantize_row_q4_k(const float* x, BlockQ4_K* y, int64_t n) {
  uint8_t q[kQKK];
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK) {
    quantize_k_super(x, 15, &y[b].d, &y[b].dmin, y[b].scales, q);
    pack_k_nibbles(q, y[b].qs);
  }
}

void quantize_row_q5_k(const float* x, BlockQ5_K* y, int64_t n) {
  uint8_t q[kQKK];
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK) {
    quantize_k_super(x, 31, &y[b].d, &y[b].dmin, y[b].scales, q);
    pack_k_nibbles(q, y[b].qs);
    std::memset(y[b].qh, 0, sizeof(y[b].qh));
    for (int j = 0; j < 8; ++j)  // bit j of qh[l]: bit 4 of element l of sub-block j
      for (int l = 0; l < 32; ++l) y[b].qh[l] |= uint8_t(((q[32 * j + l] >> 4) & 1) << j);
  }
}

void quantize_row_q6_k(const float* x, BlockQ6_K* y, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK) {
    float scale[16];
    float max_abs_scale = 0.0f, max_scale = 0.0f;
    for (int j = 0; j < 16; ++j) {
      float vmax = 0.0f;  // signed value of largest magnitude -> -32
      for (int i = 0; i < 16; ++i)
        if (std::fabs(x[16 * j + i]) > std::fabs(vmax)) vmax = x[16 * j + i];
      scale[j] = vmax / -32.0f;
      if (std::fabs(scale[j]) > max_abs_scale) {
        max_abs_scale = std::fabs(scale[j]);
        max_scale = scale[j];
      }
    }
    const uint16_t dh = float_to_fp16(max_scale / -128.0f);
    const float d = h2f(dh);
    y[b].d = dh;
    uint8_t q[kQKK];
    for (int j = 0; j < 16; ++j) {
      const int sc = d != 0.0f ? std::clamp(nearest(scale[j] / d), -128, 127) : 0;
      y[b].scales[j] = int8_t(sc);
      const float sd = d * float(sc);
      for (int i = 0; i < 16; ++i) {
        const int v = sd != 0.0f ? nearest(x[16 * j + i] / sd) : 0;
        q[16 * j + i] = uint8_t(std::clamp(v + 32, 0, 63));
      }
    }
    std::memset(y[b].ql, 0, sizeof(y[b].ql));
    std::memset(y[b].qh, 0, sizeof(y[b].qh));
    for (int e = 0; e < kQKK; ++e) {
      const int half = e / 128, g = (e % 128) / 32, l = e % 32;
      uint8_t* ql = y[b].ql + 64 * half;
      uint8_t* qh = y[b].qh + 32 * half;
      const int li = l + ((g & 1) ? 32 : 0);
      ql[li] |= uint8_t((q[e] & 0x0f) << ((g & 2) ? 4 : 0));
      qh[l] |= uint8_t((q[e] >> 4) << (2 * g));
    }
  }
}

void quantize_row_f8_b64(const float* x, BlockF8_64* y, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  for (int64_t b = 0; b < n / 64; ++b, x += 64) {
    y[b].scale = scale;
    for (int i = 0; i < 64; ++i) y[b].qs[i] = float_to_fp8_e4m3(x[i] / scale);
  }
}

template <int G>
void quantize_row_i4(const float* x, BlockI4<G>* y, int64_t n) {
  for (int64_t b = 0; b < n / G; ++b, x += G) {
    float lo = 0.0f, hi = 0.0f;
    for (int i = 0; i < G; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    y[b].d = float_to_fp16(hi > lo ? (hi - lo) / 15.0f : 1.0f);
    const float d = h2f(y[b].d);
    y[b].z = uint8_t(std::clamp(nearest(-lo / d), 0, 15));
    y[b].pad = 0;
    std::memset(y[b].qs, 0, sizeof(y[b].qs));
    for (int i = 0; i < G; ++i) i4_set_quant(y[b].qs, i, std::clamp(nearest(x[i] / d) + y[b].z, 0, 15));
  }
}
template void quantize_row_i4<32>(const float*, BlockI4<32>*, int64_t);
template void quantize_row_i4<64>(const float*, BlockI4<64>*, int64_t);
template void quantize_row_i4<128>(const float*, BlockI4<128>*, int64_t);

void quantize_row(DType t, const float* x, void* dst, int64_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, x, size_t(n) * 4); return;
    case DType::F16: {
      auto* o = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = float_to_fp16(x[i]);
      return;
    }
    case DType::BF16: {
      auto* o = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = float_to_bf16(x[i]);
      return;
    }
    case DType::Q8_0: quantize_row_q8_0(x, static_cast<BlockQ8_0*>(dst), n); return;
    case DType::Q4_0: quantize_row_q4_0(x, static_cast<BlockQ4_0*>(dst), n); return;
    case DType::Q4_1: quantize_row_q4_1(x, static_cast<BlockQ4_1*>(dst), n); return;
    case DType::Q5_0: quantize_row_q5_0(x, static_cast<BlockQ5_0*>(dst), n); return;
    case DType::Q5_1: quantize_row_q5_1(x, static_cast<BlockQ5_1*>(dst), n); return;
    case DType::Q4_K: quantize_row_q4_k(x, static_cast<BlockQ4_K*>(dst), n); return;
    case DType::Q5_K: quantize_row_q5_k(x, static_cast<BlockQ5_K*>(dst), n); return;
    case DType::Q6_K: quantize_row_q6_k(x, static_cast<BlockQ6_K*>(dst), n); return;
    case DType::F8_B64: quantize_row_f8_b64(x, static_cast<BlockF8_64*>(dst), n); return;
    case DType::I4_G32: quantize_row_i4(x, static_cast<BlockI4_32*>(dst), n); return;
    case DType::I4_G64: quantize_row_i4(x, static_cast<BlockI4_64*>(dst), n); return;
    case DType::I4_G128: quantize_row_i4(x, static_cast<BlockI4_128*>(dst), n); return;
    default: break;  // I32, and raw F8_E4M3, which has no scale to quantize against
  }
  throw Error("quantize_row: unsupported dtype " + std::string(dtype_name(t)));
}

void dequantize_row(DType t, const void* src, float* y, int64_t n) {
  switch (t) {
    case DType::F32: std::memcpy(y, src, size_t(n) * 4); return;
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_float(s[i]);
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(s[i]);
      return;
    }
    case DType::Q8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = h2f(b[k].d);
        for (int i = 0; i < kQK; ++i) y[i] = d * float(b[k].qs[i]);
      }
      return;
    }
    case DType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(src);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = h2f(b[k].d);
        for (int i = 0; i < kQK / 2; ++i) {
          y[i] = d * float((b[k].qs[i] & 0x0f) - 8);
          y[i + 16] = d * float((b[k].qs[i] >> 4) - 8);
        }
      }
      return;
    }
    case DType::Q4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(src);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = h2f(b[k].d), m = h2f(b[k].m);
        for (int i = 0; i < kQK / 2; ++i) {
          y[i] = d * float(b[k].qs[i] & 0x0f) + m;
          y[i + 16] = d * float(b[k].qs[i] >> 4) + m;
        }
      }
      return;
    }
    case DType::Q4_K: {
      const auto* b = static_cast<const BlockQ4_K*>(src);
      for (int64_t k = 0; k < n / kQKK; ++k, y += kQKK) dequant_k_super(b[k], y);
      return;
    }
    case DType::Q5_K: {
      const auto* b = static_cast<const BlockQ5_K*>(src);
      for (int64_t k = 0; k < n / kQKK; ++k, y += kQKK) dequant_k_super(b[k], y);
      return;
    }
    case DType::Q5_0: {
      const auto* b = static_cast<const BlockQ5_0*>(src);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = h2f(b[k].d);
        for (int l = 0; l < kQK; ++l) y[l] = d * float(q5_quant(b[k].qs, b[k].qh, l) - 16);
      }
      return;
    }
    case DType::Q5_1: {
      const auto* b = static_cast<const BlockQ5_1*>(src);
      for (int64_t k = 0; k < n / kQK; ++k, y += kQK) {
        const float d = h2f(b[k].d), m = h2f(b[k].m);
        for (int l = 0; l < kQK; ++l) y[l] = d * float(q5_quant(b[k].qs, b[k].qh, l)) + m;
      }
      return;
    }
    case DType::Q6_K: {
      const auto* b = static_cast<const BlockQ6_K*>(src);
      for (int64_t k = 0; k < n / kQKK; ++k) {
        const float d = h2f(b[k].d);
        for (int half = 0; half < 2; ++half) {
          const uint8_t* ql = b[k].ql + 64 * half;
          const uint8_t* qh = b[k].qh + 32 * half;
          const int8_t* sc = b[k].scales + 8 * half;
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is + 0] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
          }
          y += 128;
        }
      }
      return;
    }
    case DType::F8_E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = fp8_table()[s[i]];
      return;
    }
    case DType::F8_B64: {
      const auto* b = static_cast<const BlockF8_64*>(src);
      const float* lut = fp8_table();
      for (int64_t k = 0; k < n / 64; ++k, y += 64)
        for (int l = 0; l < 64; ++l) y[l] = b[k].scale * lut[b[k].qs[l]];
      return;
    }
    case DType::I4_G32: return dequant_i4<32>(src, y, n);
    case DType::I4_G64: return dequant_i4<64>(src, y, n);
    case DType::I4_G128: return dequant_i4<128>(src, y, n);
    case DType::I32: break;
  }
  throw Error("dequantize_row: unsupported dtype " + std::string(dtype_name(t)));
}

}  // namespace greta
