// Element types of weights and activations, and fp16/bf16 <-> float conversion.
// Quantized types use GGML's block layouts (see quant_blocks.h); their "element"
// size is a block: block_elems() values per block_bytes() bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace greta {

// The numeric values are stored in tests/data/dequant_golden.bin (tools/check_dequant.py):
// new types go at the end.
enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, I32, Q5_0, Q5_1, Q5_K };

// Values per block (1 for plain types).
constexpr int64_t block_elems(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1: return 32;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return 256;
    default: return 1;
  }
}
// Bytes per block.
constexpr size_t block_bytes(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    case DType::Q8_0: return 34;
    case DType::Q4_0: return 18;
    case DType::Q4_1: return 20;
    case DType::Q5_0: return 22;
    case DType::Q5_1: return 24;
    case DType::Q4_K: return 144;
    case DType::Q5_K: return 176;
    case DType::Q6_K: return 210;
  }
  return 0;
}
constexpr bool is_quantized(DType t) { return block_elems(t) > 1; }
// Bytes of a row of n values; n must be a multiple of block_elems(t).
constexpr size_t row_bytes(DType t, int64_t n) { return size_t(n / block_elems(t)) * block_bytes(t); }

std::string_view dtype_name(DType t);

// IEEE half <-> float (round to nearest even).
float fp16_to_float(uint16_t h);
uint16_t float_to_fp16(float f);

// bfloat16 is the top half of a float32.
inline float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace greta
