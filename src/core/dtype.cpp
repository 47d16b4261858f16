#include "core/dtype.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace greta {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
    case DType::Q4_K: return "Q4_K";
    case DType::Q6_K: return "Q6_K";
    case DType::I32: return "I32";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q5_K: return "Q5_K";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_B64: return "F8_B64";
    case DType::I4_G32: return "I4_G32";
    case DType::I4_G64: return "I4_G64";
    case DType::I4_G128: return "I4_G128";
  }
  return "?";
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      u = sign | uint32_t(127 - 15 - e) << 23 | mant << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | mant << 13;
  } else {
    u = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float fp8_e4m3_to_float(uint8_t v) {
  const int exp = (v >> 3) & 0x0f, mant = v & 0x07;
  float f;
  if ((v & 0x7f) == 0x7f) f = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0) f = std::ldexp(float(mant), -9);  // subnormal: mant/8 * 2^-6
  else f = std::ldexp(float(8 + mant), exp - 10);      // (1 + mant/8) * 2^(exp-7)
  return (v & 0x80) ? -f : f;
}

uint8_t float_to_fp8_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fabs(f);
  if (std::isnan(f)) return 0x7f;
  if (a >= 448.0f) return uint8_t(sign | 0x7e);
  int e;
  std::frexp(a, &e);              // a = m * 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
  if (a == 0.0f || e - 1 < -6) {  // subnormal range: steps of 2^-9; code 8 is the smallest normal
    return uint8_t(sign | int(std::nearbyint(std::ldexp(a, 9))));
  }
  int m = int(std::nearbyint(std::ldexp(a, 4 - e))) - 8;  // mantissa steps of 2^(e-4), leading 1 = 8
  int ex = e - 1 + 7;
  if (m == 8) m = 0, ++ex;  // rounded up to the next power of two
  return uint8_t(sign | std::min(ex << 3 | m, 0x7e));
}

uint16_t float_to_fp16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow -> inf (also inf)
  if (abs < 0x38800000u) {                                  // below smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;                     // rounds to zero
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14 - (e - 112)
    uint32_t h = m >> (shift);
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return uint16_t(sign | h);
}

}  // namespace greta
