// GGML block formats: dequantize_row against golden data from the gguf package
// (tools/check_dequant.py), quantize -> dequantize round trips with per-type error bounds,
// and fp16/bf16 conversions including subnormals, infinities and NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/host_tensor.h"
#include "core/quant_blocks.h"

using namespace greta;

namespace {

std::string source_dir() {
  const char* env = std::getenv("GRETA_SOURCE_DIR");
  return env ? env : GRETA_SOURCE_DIR;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace

TEST(CoreQuant, DequantizeMatchesGgufGolden) {
  const std::string path = source_dir() + "/tests/data/dequant_golden.bin";
  std::ifstream f(path, std::ios::binary);
  ASSERT_TRUE(f) << "missing " << path << " (regenerate with tools/check_dequant.py)";
  int records = 0;
  bool saw[16] = {};
  for (;;) {
    uint32_t hdr[3];
    if (!f.read(reinterpret_cast<char*>(hdr), sizeof(hdr))) break;
    const auto t = DType(hdr[0]);
    const uint32_t n = hdr[1], nbytes = hdr[2];
    ASSERT_EQ(row_bytes(t, n), nbytes) << dtype_name(t);
    std::vector<uint8_t> raw(nbytes);
    std::vector<float> want(n), got(n);
    ASSERT_TRUE(f.read(reinterpret_cast<char*>(raw.data()), nbytes));
    ASSERT_TRUE(f.read(reinterpret_cast<char*>(want.data()), n * sizeof(float)));
    dequantize_row(t, raw.data(), got.data(), n);
    for (uint32_t i = 0; i < n; ++i) {
      // gguf computes in numpy float32 with possibly different operation order: allow 2 ulp.
      ASSERT_NEAR(got[i], want[i], 2.5e-7f * std::fabs(want[i]) + 1e-30f)
          << dtype_name(t) << " record " << records << " element " << i;
    }
    saw[hdr[0] & 15] = true;
    ++records;
  }
  EXPECT_GE(records, 10);
  for (DType t :
       {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    EXPECT_TRUE(saw[int(t)]) << "no golden record for " << dtype_name(t);
}

// Reference quantizers round trip within the format's step size.
TEST(CoreQuant, RoundTripErrorBounds) {
  const int64_t n = 768;  // 3 super-blocks, 24 small blocks
  const auto x = random_floats(n, 7);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::F16, DType::BF16, DType::F32}) {
    std::vector<uint8_t> q(row_bytes(t, n));
    std::vector<float> y(n);
    quantize_row(t, x.data(), q.data(), n);
    dequantize_row(t, q.data(), y.data(), n);
    // Per 32-value group: error <= step/2 (+ scale rounding), step = range / levels.
    const double levels = t == DType::Q8_0                                           ? 254
                          : t == DType::Q6_K                                         ? 63
                          : t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q5_K ? 31
                          : t == DType::F16                                          ? 2048
                          : t == DType::BF16                                         ? 256
                          : t == DType::F32                                          ? 1e9
                                                                                     : 15;
    double worst = 0.0;
    for (int64_t b = 0; b < n / 32; ++b) {
      double amax = 0.0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, double(std::fabs(x[b * 32 + i])));
      for (int i = 0; i < 32; ++i) {
        const double e = std::fabs(double(y[b * 32 + i]) - x[b * 32 + i]);
        // K-quants quantize their sub-block scales too (6-bit / 8-bit): allow a wider margin.
        const bool k_quant = t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
        const double bound = (k_quant ? 1.6 : 1.05) * 2 * amax / levels;
        worst = std::max(worst, e / bound);
        ASSERT_LE(e, bound) << dtype_name(t) << " element " << b * 32 + i << " x=" << x[b * 32 + i]
                            << " y=" << y[b * 32 + i];
      }
    }
    RecordProperty(std::string(dtype_name(t)), std::to_string(worst));
  }
}

TEST(CoreQuant, ZeroBlocksStayZero) {
  std::vector<float> x(256, 0.0f), y(256, 1.0f);
  for (DType t :
       {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    std::vector<uint8_t> q(row_bytes(t, 256));
    quantize_row(t, x.data(), q.data(), 256);
    dequantize_row(t, q.data(), y.data(), 256);
    for (float v : y) ASSERT_EQ(v, 0.0f) << dtype_name(t);
  }
}

TEST(CoreQuant, Q4KScaleUnpacking) {
  // Sub-blocks 4..7 keep their top 2 bits in the top bits of bytes 0..7.
  uint8_t s[12] = {};
  const uint8_t sc[8] = {1, 17, 33, 63, 5, 48, 62, 31}, mn[8] = {63, 2, 40, 9, 60, 33, 0, 47};
  for (int j = 0; j < 4; ++j) s[j] = sc[j], s[j + 4] = mn[j];
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = uint8_t((sc[j] & 15) | ((mn[j] & 15) << 4));
    s[j - 4] |= uint8_t((sc[j] >> 4) << 6);
    s[j] |= uint8_t((mn[j] >> 4) << 6);
  }
  for (int j = 0; j < 8; ++j) {
    uint8_t a, b;
    q4k_scale_min(j, s, &a, &b);
    EXPECT_EQ(a, sc[j]) << j;
    EXPECT_EQ(b, mn[j]) << j;
  }
}

// Blocks built by hand from the layout GGML documents (ggml-common.h), byte by byte, decode to
// the values the format defines; the reference quantizers write the same bytes back.
TEST(CoreQuant, Q5_0AndQ5_1LayoutByHand) {
  // Quant of element l: a pattern that uses both halves of every nibble byte and all 32 qh bits.
  int q[32];
  for (int l = 0; l < 32; ++l) q[l] = (l * 13 + 5) % 32;
  uint8_t qs[16] = {}, qh[4] = {};
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 15) | ((q[j + 16] & 15) << 4));
  for (int l = 0; l < 32; ++l) qh[l / 8] |= uint8_t((q[l] >> 4) << (l % 8));
  const uint16_t d = 0x3800, m = 0xc000;  // 0.5 and -2.0
  // Q5_0: bytes d, qh[4], qs[16]; value = d * (q - 16).
  uint8_t b0[22];
  std::memcpy(b0, &d, 2);
  std::memcpy(b0 + 2, qh, 4);
  std::memcpy(b0 + 6, qs, 16);
  float y[32];
  dequantize_row(DType::Q5_0, b0, y, 32);
  for (int l = 0; l < 32; ++l) ASSERT_EQ(y[l], 0.5f * float(q[l] - 16)) << l;
  // The value of largest magnitude, -8, maps to quant 0, so the quantizer finds d = 0.5 exactly.
  std::vector<uint8_t> again(22);
  quantize_row(DType::Q5_0, y, again.data(), 32);
  EXPECT_EQ(again, std::vector<uint8_t>(b0, b0 + 22));
  // Q5_1: bytes d, m, qh[4], qs[16]; value = d * q + m.
  uint8_t b1[24];
  std::memcpy(b1, &d, 2);
  std::memcpy(b1 + 2, &m, 2);
  std::memcpy(b1 + 4, qh, 4);
  std::memcpy(b1 + 8, qs, 16);
  dequantize_row(DType::Q5_1, b1, y, 32);
  for (int l = 0; l < 32; ++l) ASSERT_EQ(y[l], 0.5f * float(q[l]) - 2.0f) << l;
  // The pattern reaches 0 and 31, so the affine quantizer finds d = 0.5, m = -2 exactly.
  again.resize(24);
  quantize_row(DType::Q5_1, y, again.data(), 32);
  EXPECT_EQ(again, std::vector<uint8_t>(b1, b1 + 24));
}

TEST(CoreQuant, Q5_KLayoutByHand) {
  // Sub-block j: scale j + 1 and min 2j (6-bit, packed as Q4_K packs them); element l of
  // sub-block j has quant (7j + 3l) % 32: low nibbles in qs as Q4_K, bit 4 in bit j of qh[l].
  BlockQ5_K b{};
  b.d = 0x3c00;     // 1.0
  b.dmin = 0x3400;  // 0.25
  uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) sc[j] = uint8_t(j + 1), mn[j] = uint8_t(2 * j);
  for (int j = 0; j < 4; ++j) b.scales[j] = sc[j], b.scales[j + 4] = mn[j];
  for (int j = 4; j < 8; ++j) {
    b.scales[j + 4] = uint8_t((sc[j] & 15) | ((mn[j] & 15) << 4));
    b.scales[j - 4] |= uint8_t((sc[j] >> 4) << 6);
    b.scales[j] |= uint8_t((mn[j] >> 4) << 6);
  }
  auto quant = [](int j, int l) { return (7 * j + 3 * l) % 32; };
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * (j / 2) + l] |= uint8_t((quant(j, l) & 15) << (4 * (j % 2)));
      b.qh[l] |= uint8_t((quant(j, l) >> 4) << j);
    }
  const auto* bytes = reinterpret_cast<const uint8_t*>(&b);
  EXPECT_EQ(bytes[0], 0x00);  // d first, then dmin, scales[12], qh[32], qs[128]
  EXPECT_EQ(bytes[3], 0x34);
  EXPECT_EQ(bytes[4], b.scales[0]);
  EXPECT_EQ(bytes[16], b.qh[0]);
  EXPECT_EQ(bytes[48], b.qs[0]);
  float y[256];
  dequantize_row(DType::Q5_K, &b, y, 256);
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l)
      ASSERT_EQ(y[32 * j + l], float(sc[j]) * float(quant(j, l)) - 0.25f * float(mn[j])) << j << " " << l;
}

// Rows whose length is any multiple of the block (576 = 18 blocks of 32, not a multiple of
// 256: the widths where Q4_K_M / Q5_K_M files fall back to Q5_0 / Q5_1) and single blocks;
// each block of a row decodes as that block alone, and constant or one-signed blocks are exact
// where the format can hold them.
TEST(CoreQuant, AwkwardShapes) {
  for (DType t : {DType::Q5_0, DType::Q5_1, DType::Q5_K}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const int64_t be = block_elems(t);
    for (int64_t n : {be, 3 * be, t == DType::Q5_K ? 5 * be : int64_t(576)}) {
      const auto x = random_floats(size_t(n), uint32_t(n), 3.0f);
      std::vector<uint8_t> q(row_bytes(t, n));
      std::vector<float> y(static_cast<size_t>(n)), one(static_cast<size_t>(be));
      quantize_row(t, x.data(), q.data(), n);
      dequantize_row(t, q.data(), y.data(), n);
      for (int64_t b = 0; b < n / be; ++b) {
        dequantize_row(t, q.data() + b * block_bytes(t), one.data(), be);
        for (int64_t i = 0; i < be; ++i) ASSERT_EQ(one[size_t(i)], y[size_t(b * be + i)]) << n << " " << b;
      }
    }
    // A constant block: Q5_1 (m = the value) and Q5_K (the top quant) hold it to fp16
    // precision, Q5_0 to within its step.
    std::vector<float> c(static_cast<size_t>(be), 1.5f), yc(static_cast<size_t>(be));
    std::vector<uint8_t> qc(block_bytes(t));
    quantize_row(t, c.data(), qc.data(), be);
    dequantize_row(t, qc.data(), yc.data(), be);
    for (float v : yc) ASSERT_NEAR(v, 1.5f, t == DType::Q5_0 ? 1.5f / 16 : 1e-3f);
  }
}

TEST(CoreDType, Fp16RoundTripsEveryHalf) {
  // Every finite half survives half -> float -> half exactly; NaNs stay NaN.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_float(uint16_t(h));
    const bool nan = ((h >> 10) & 31) == 31 && (h & 1023) != 0;
    if (nan) {
      ASSERT_TRUE(std::isnan(f)) << h;
      ASSERT_TRUE(std::isnan(fp16_to_float(float_to_fp16(f)))) << h;
    } else {
      ASSERT_EQ(float_to_fp16(f), h) << h;
    }
  }
}

TEST(CoreDType, Fp16SpecialValues) {
  EXPECT_EQ(fp16_to_float(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(fp16_to_float(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(fp16_to_float(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(fp16_to_float(0x7c00)) && fp16_to_float(0x7c00) > 0);
  EXPECT_TRUE(std::isinf(fp16_to_float(0xfc00)) && fp16_to_float(0xfc00) < 0);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);  // rounds up to inf
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to the smallest: ties to even (0)
  EXPECT_EQ(float_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_fp16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: ties to even (2)
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(NAN))));
  EXPECT_EQ(float_to_fp16(INFINITY), 0x7c00);
}

TEST(CoreDType, Bf16RoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_float(uint16_t(b));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f))));
    } else {
      ASSERT_EQ(float_to_bf16(f), b) << b;  // includes subnormals and infinities
    }
  }
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  uint32_t snan_bits = 0x7f800001u;  // NaN whose payload would be lost by truncation
  float snan;
  std::memcpy(&snan, &snan_bits, 4);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(snan))));
}
