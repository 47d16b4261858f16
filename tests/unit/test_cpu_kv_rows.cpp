// Rows of the CPU KV cache (backend/cpu/kv_rows.h): the FP8 e4m3 row write (a float scale per
// row, amax / 448) read back within e4m3's half step, saturating, zero rows, signs; the decoders
// attention uses (scalar and 8-wide) against the exact e4m3 / bf16 / fp16 values.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/kv_rows.h"
#include "core/dtype.h"

using namespace greta;
using namespace greta::cpu;

namespace {

// Half the e4m3 step at |y| (y = x / scale, |y| <= 448): steps are 2^(e-3) for |y| in
// [2^e, 2^(e+1)), e >= -6, and 2^-9 below 2^-6 (subnormals).
double e4m3_half_step(double y) {
  y = std::fabs(y);
  if (y < std::ldexp(1.0, -6)) return std::ldexp(1.0, -10);
  return std::ldexp(1.0, int(std::floor(std::log2(y))) - 4);
}

struct Fp8Rows {
  std::vector<uint8_t> codes;
  std::vector<float> scales, back;
};

// Stores n_kv rows of hd values at slot 1 (row indices n_kv .. 2 n_kv - 1) and reads them back.
Fp8Rows roundtrip(const std::vector<float>& x, int n_kv, int hd) {
  Fp8Rows r;
  r.codes.assign(size_t(2 * n_kv * hd), 0xaa);
  r.scales.assign(size_t(2 * n_kv), -1.0f);
  store_kv_rows(DType::F8_E4M3, x.data(), n_kv, hd, r.codes.data(), r.scales.data(), 1);
  r.back.resize(x.size());
  for (int h = 0; h < n_kv; ++h)
    load_kv_row(DType::F8_E4M3, r.codes.data(), r.scales.data(), n_kv + h, hd, r.back.data() + size_t(h) * hd);
  return r;
}

}  // namespace

TEST(CpuKvRows, Fp8RoundTripWithinHalfStep) {
  const int n_kv = 3, hd = 64;
  std::mt19937 rng(7);
  for (float magnitude : {1e-6f, 0.01f, 1.0f, 30.0f, 5e4f}) {
    std::normal_distribution<float> nd(0.0f, magnitude);
    std::vector<float> x(size_t(n_kv * hd));
    for (float& v : x) v = nd(rng);
    const Fp8Rows r = roundtrip(x, n_kv, hd);
    for (int h = 0; h < n_kv; ++h) {
      float amax = 0;
      for (int i = 0; i < hd; ++i) amax = std::max(amax, std::fabs(x[size_t(h * hd + i)]));
      const float scale = r.scales[size_t(n_kv + h)];
      EXPECT_EQ(scale, amax / 448.0f) << "magnitude " << magnitude;
      EXPECT_EQ(r.scales[size_t(h)], -1.0f) << "slot 0 was written";
      for (int i = 0; i < hd; ++i) {
        const size_t at = size_t(h * hd + i);
        const uint8_t code = r.codes[size_t(n_kv * hd) + at];
        // The code is the project's e4m3 rounding (nearest even, saturating) of x / scale ...
        EXPECT_EQ(code, float_to_fp8_e4m3(x[at] / scale));
        EXPECT_EQ(r.codes[at], 0xaa) << "slot 0 was written";
        // ... and reads back within half an e4m3 step of x (scaled), plus float rounding.
        const double y = double(x[at]) / scale;
        const double err = std::fabs(double(r.back[at]) - double(x[at]));
        EXPECT_LE(err, (e4m3_half_step(y) + 1e-6 * std::fabs(y)) * scale)
            << "x " << x[at] << " scale " << scale << " read " << r.back[at];
        EXPECT_EQ(r.back[at], float(double(fp8_e4m3_to_float(code)) * scale));
      }
    }
  }
}

TEST(CpuKvRows, Fp8SaturatesAtTheRowMaximum) {
  // x / (amax / 448) can round above 448 in float; the largest value must still be +-448 (code
  // 0x7e / 0xfe), never NaN (0x7f / 0xff).
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.5f, 2.0f);
  const int hd = 16;
  int at_max = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> x(hd);
    for (float& v : x) v = u(rng) * (trial % 2 ? -1.0f : 1.0f);
    const Fp8Rows r = roundtrip(x, 1, hd);
    for (int i = 0; i < hd; ++i) {
      const uint8_t c = r.codes[size_t(hd + i)];
      ASSERT_NE(c & 0x7f, 0x7f) << "NaN code for " << x[size_t(i)];
      at_max += (c & 0x7f) == 0x7e;
    }
  }
  EXPECT_GE(at_max, 2000);  // every row's largest value lands on 448
}

TEST(CpuKvRows, Fp8ZeroRowsAndSigns) {
  const int n_kv = 2, hd = 32;
  std::vector<float> x(size_t(n_kv * hd), 0.0f);
  x[1] = -0.0f;
  for (int i = 0; i < hd; ++i) x[size_t(hd + i)] = float(i % 7) - 3.0f;  // head 1: negatives, zeros, positives
  const Fp8Rows r = roundtrip(x, n_kv, hd);
  EXPECT_EQ(r.scales[size_t(n_kv)], 0.0f) << "a zero row has scale 0";
  for (int i = 0; i < hd; ++i) {
    EXPECT_EQ(r.codes[size_t(n_kv * hd + i)], 0) << "zero row, value " << i;
    EXPECT_EQ(r.back[size_t(i)], 0.0f);
    EXPECT_FALSE(std::isnan(r.back[size_t(i)]));
  }
  // The mirrored row: the same codes with the sign bit flipped, the same scale, exact negatives.
  std::vector<float> neg(x);
  for (float& v : neg) v = -v;
  const Fp8Rows m = roundtrip(neg, n_kv, hd);
  EXPECT_EQ(m.scales[size_t(n_kv + 1)], r.scales[size_t(n_kv + 1)]);
  for (int i = 0; i < hd; ++i) {
    const size_t at = size_t(hd + i);
    const uint8_t c = r.codes[size_t(n_kv * hd) + at], cm = m.codes[size_t(n_kv * hd) + at];
    if (x[at] != 0.0f) {
      EXPECT_EQ(cm, uint8_t(c ^ 0x80)) << i;
    }
    EXPECT_EQ(m.back[at], -r.back[at]) << i;
    EXPECT_EQ(r.back[at] < 0, x[at] < 0) << i;
  }
}

TEST(CpuKvRows, DecodersGiveExactValues) {
  // Every e4m3 code but NaN: the scalar and the 8-wide decoders give fp8 * 2^-8, which the row
  // factor (scale * 256) turns back exactly.
  std::vector<uint8_t> codes;
  for (int c = 0; c < 256; ++c)
    if ((c & 0x7f) != 0x7f) codes.push_back(uint8_t(c));
  while (codes.size() % 8) codes.push_back(0);
  for (size_t i = 0; i < codes.size(); ++i) {
    const float want = fp8_e4m3_to_float(codes[i]);
    EXPECT_EQ(KvFP8::get(codes.data(), int(i)) * KvFP8::row_factor(1.0f), want) << "code " << int(codes[i]);
  }
#ifdef GRETA_AVX2
  for (size_t i = 0; i < codes.size(); i += 8) {
    float v[8];
    _mm256_storeu_ps(v, KvFP8::load8(codes.data() + i));
    for (int l = 0; l < 8; ++l) EXPECT_EQ(v[l], KvFP8::get(codes.data(), int(i) + l)) << "code " << int(codes[i + l]);
  }
  std::mt19937 rng(5);
  std::vector<uint16_t> halves(64), bf(64);
  for (auto& h : halves) h = uint16_t(float_to_fp16(std::normal_distribution<float>(0, 100)(rng)));
  for (auto& b : bf) b = float_to_bf16(std::normal_distribution<float>(0, 1e10f)(rng));
  for (size_t i = 0; i < 64; i += 8) {
    float a[8], b[8];
    _mm256_storeu_ps(a, KvF16::load8(halves.data() + i));
    _mm256_storeu_ps(b, KvBF16::load8(bf.data() + i));
    for (int l = 0; l < 8; ++l) {
      EXPECT_EQ(a[l], fp16_to_float(halves[i + size_t(l)]));
      EXPECT_EQ(b[l], bf16_to_float(bf[i + size_t(l)]));
    }
  }
#endif
}

TEST(CpuKvRows, Bf16AndF16RowsRoundToNearest) {
  std::vector<float> x = {1.0f, -3.14159f, 65504.0f, 1e-3f, 123456.789f, -0.0f, 2.5e-8f, 7.0f};
  std::vector<uint16_t> pool(16);
  std::vector<float> back(8);
  store_kv_rows(DType::BF16, x.data(), 1, 8, pool.data(), nullptr, 1);
  load_kv_row(DType::BF16, pool.data(), nullptr, 1, 8, back.data());
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(back[i], bf16_to_float(float_to_bf16(x[i])));
  store_kv_rows(DType::F16, x.data(), 1, 8, pool.data(), nullptr, 0);
  load_kv_row(DType::F16, pool.data(), nullptr, 0, 8, back.data());
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(back[i], fp16_to_float(float_to_fp16(x[i])));
}
