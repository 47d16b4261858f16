// Block types of Hugging Face quantized checkpoints (quant_blocks.h): fp8 e4m3 decoding against
// the format's definition, and dequantize_row of F8_B64 / I4_G* blocks built by hand, so a wrong
// nibble position, zero point or scale shows as a wrong value.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/host_tensor.h"
#include "core/quant_blocks.h"

using namespace greta;

TEST(HfQuantBlocks, Fp8E4M3DecodesEveryCode) {
  EXPECT_EQ(fp8_e4m3_to_float(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_float(0x80)));
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.0f);    // exponent 7 = bias
  EXPECT_EQ(fp8_e4m3_to_float(0x39), 1.125f);  // one mantissa step
  EXPECT_EQ(fp8_e4m3_to_float(0x7e), 448.0f);  // largest finite
  EXPECT_EQ(fp8_e4m3_to_float(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0xff)));
  // Monotonic over the positive codes, and the sign bit only flips the sign.
  for (int c = 1; c < 0x7f; ++c) {
    EXPECT_GT(fp8_e4m3_to_float(uint8_t(c)), fp8_e4m3_to_float(uint8_t(c - 1))) << c;
    EXPECT_EQ(fp8_e4m3_to_float(uint8_t(c | 0x80)), -fp8_e4m3_to_float(uint8_t(c))) << c;
  }
  std::vector<uint8_t> raw = {0x38, 0xb9, 0x7e};
  float y[3];
  dequantize_row(DType::F8_E4M3, raw.data(), y, 3);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -1.125f);
  EXPECT_EQ(y[2], 448.0f);
}

TEST(HfQuantBlocks, F8B64ScalesEachBlock) {
  BlockF8_64 b[2];
  b[0].scale = 0.5f;
  b[1].scale = -2.0f;
  for (int l = 0; l < 64; ++l) b[0].qs[l] = b[1].qs[l] = uint8_t(0x38 + (l % 8));  // 1 + (l%8)/8
  float y[128];
  dequantize_row(DType::F8_B64, b, y, 128);
  for (int l = 0; l < 64; ++l) {
    EXPECT_EQ(y[l], 0.5f * (1.0f + float(l % 8) / 8.0f)) << l;
    EXPECT_EQ(y[64 + l], -2.0f * (1.0f + float(l % 8) / 8.0f)) << l;
  }
  EXPECT_EQ(row_bytes(DType::F8_B64, 128), 136u);
}

template <int G>
void check_i4(DType t) {
  SCOPED_TRACE(std::string(dtype_name(t)));
  EXPECT_EQ(block_elems(t), G);
  EXPECT_EQ(i4_type_for_group(G), t);
  BlockI4<G> b[2];
  std::memset(b, 0, sizeof b);
  b[0].d = float_to_fp16(0.25f);
  b[0].z = 3;
  b[1].d = float_to_fp16(-1.5f);
  b[1].z = 16;  // GPTQ's classic zeros reach 16
  for (int l = 0; l < G; ++l) {
    i4_set_quant(b[0].qs, l, (l * 7) % 16);
    i4_set_quant(b[1].qs, l, 15 - l % 16);
    EXPECT_EQ(i4_quant(b[0].qs, l), (l * 7) % 16);
  }
  float y[2 * G];
  dequantize_row(t, b, y, 2 * G);
  for (int l = 0; l < G; ++l) {
    EXPECT_EQ(y[l], 0.25f * float((l * 7) % 16 - 3)) << l;
    EXPECT_EQ(y[G + l], -1.5f * float(15 - l % 16 - 16)) << l;
  }
}

TEST(HfQuantBlocks, I4GroupsDequantize) {
  check_i4<32>(DType::I4_G32);
  check_i4<64>(DType::I4_G64);
  check_i4<128>(DType::I4_G128);
  EXPECT_EQ(i4_type_for_group(256), DType::F32);  // no such type: callers report it
  EXPECT_EQ(block_bytes(DType::I4_G128) * 8.0 / 128, 4.25);
}

TEST(HfQuantBlocks, NibbleLayoutPairsElementsSixteenApart) {
  // Within each run of 32, byte j holds element j (low) and j + 16 (high), as Q4_0's nibbles.
  uint8_t qs[64] = {};
  i4_set_quant(qs, 0, 0x1);
  i4_set_quant(qs, 16, 0x2);
  i4_set_quant(qs, 32, 0x3);
  i4_set_quant(qs, 49, 0x4);
  EXPECT_EQ(qs[0], 0x21);
  EXPECT_EQ(qs[16], 0x03);
  EXPECT_EQ(qs[17], 0x40);
}

TEST(HfQuantBlocks, Fp8EncoderRoundsToNearestCode) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    EXPECT_EQ(float_to_fp8_e4m3(fp8_e4m3_to_float(uint8_t(c))), c == 0x80 ? 0x80 : c) << c;
  }
  // Halfway between codes rounds to the even one; beyond the range saturates.
  EXPECT_EQ(float_to_fp8_e4m3(1.0625f), 0x38);  // between 1.0 (0x38) and 1.125 (0x39)
  EXPECT_EQ(float_to_fp8_e4m3(1.1875f), 0x3a);  // between 1.125 and 1.25 (0x3a)
  EXPECT_EQ(float_to_fp8_e4m3(1.97f), 0x40);    // rounds up into the next binade: 2.0
  EXPECT_EQ(float_to_fp8_e4m3(1000.0f), 0x7e);
  EXPECT_EQ(float_to_fp8_e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(float_to_fp8_e4m3(std::ldexp(1.5f, -9)), 0x02);  // subnormal half-way: to even
  EXPECT_EQ(float_to_fp8_e4m3(std::ldexp(1.0f, -12)), 0x00);
  EXPECT_EQ(float_to_fp8_e4m3(std::nanf("")), 0x7f);
}

TEST(HfQuantBlocks, QuantizeRoundTrips) {
  std::vector<float> x(256), y(256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i) * 0.37f) * (1.0f + float(i % 7));
  for (DType t : {DType::F8_B64, DType::I4_G32, DType::I4_G64, DType::I4_G128}) {
    std::vector<uint8_t> q(row_bytes(t, 256));
    quantize_row(t, x.data(), q.data(), 256);
    dequantize_row(t, q.data(), y.data(), 256);
    const int64_t B = block_elems(t);
    for (int64_t b = 0; b < 256 / B; ++b) {
      // fp8 takes one scale for the whole row (per-channel, as the FP8 tensor-core GEMM wants it),
      // int4 one per group.
      const int64_t r0 = t == DType::F8_B64 ? 0 : b * B, r1 = t == DType::F8_B64 ? 256 : (b + 1) * B;
      float lo = 0.0f, hi = 0.0f;
      for (int64_t i = r0; i < r1; ++i) lo = std::min(lo, x[size_t(i)]), hi = std::max(hi, x[size_t(i)]);
      // fp8: half a step of 3 mantissa bits (1/16 relative) plus the subnormal step of the row;
      // int4: one step of (hi - lo) / 15 (half from rounding x, half more at the ends from
      // rounding the zero point), plus the fp16 rounding of the step.
      for (int64_t i = b * B; i < (b + 1) * B; ++i) {
        const float xi = x[size_t(i)], err = std::fabs(y[size_t(i)] - xi);
        const float bound = t == DType::F8_B64 ? std::fabs(xi) / 16 + std::max(-lo, hi) / 448 * std::ldexp(1.0f, -9)
                                               : (hi - lo) / 15 * 1.01f;
        EXPECT_LE(err, bound) << dtype_name(t) << " element " << i;
      }
    }
  }
}
