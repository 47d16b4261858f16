// GGML quantized block layouts, byte for byte as GGUF files store them, the block types that
// Hugging Face FP8 / AWQ / GPTQ checkpoints are converted into at load (model/hf_quant.h), and
// reference (scalar, obviously-correct) quantizers. dequantize_row() (host_tensor.h) is defined
// next to these in quant_blocks.cpp.
//
// Every GGML block type is a plain struct of bytes: fp16 scales are kept as uint16_t bit patterns
// so the structs have no alignment padding and can be overlaid on a file mapping at any
// offset (blocks in a row are packed back to back, so a block may be only 2-byte aligned).
//
// The quantizers here are for tests, synthetic weights and activation quantization; they
// round to nearest and are not the error-minimising searches llama.cpp's quantize tool uses
// (a file's weights were made by that tool; we only need to read them exactly).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace greta {

constexpr int kQK = 32;    // values per Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 block
constexpr int kQKK = 256;  // values per K-quant super-block

// value = d * q
struct BlockQ8_0 {
  uint16_t d;      // fp16 scale
  int8_t qs[kQK];  // quants
};
// value = d * (q - 8); byte j holds element j (low nibble) and element j + 16 (high nibble)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// value = d * q + m; nibble layout as Q4_0
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
// value = d * (q - 16), q in [0, 31]: the low 4 bits as Q4_0's nibbles, bit 4 of element j is
// bit j of qh (read as a little-endian u32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// value = d * q + m, q in [0, 31]; bit layout as Q5_0
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// 8 sub-blocks of 32. Sub-block j: value = d*sc[j]*q - dmin*mn[j], with 6-bit sc/mn packed
// into scales[12] (see q4k_scale_min). Bytes qs[32*i .. 32*i+32) hold sub-block 2i in their
// low nibbles and sub-block 2i+1 in their high nibbles.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
// As Q4_K with 5-bit quants q in [0, 31]: the low 4 bits sit in qs as in Q4_K, and bit 4 of
// element l of sub-block j is bit j of qh[l].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
// 16 sub-blocks of 16 with int8 scales; 6-bit quants q in [0, 63], value = d*sc*(q - 32).
// Low 4 bits in ql, high 2 bits in qh; see dequantize_row for the exact interleave.
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};

// Hugging Face FP8 (e4m3) weights: value = scale * fp8(qs[l]) for the 64 values of the block.
// Checkpoints give one scale per tensor, per output row, or per 128x128 tile; each of these is
// exactly one scale per 64-value run of a row, so all three load into this one type without
// loss, at 68 bytes per 64 weights (1.06 bytes a weight). A single scale per row (1 byte a
// weight) could not hold the tile-scaled checkpoints, and a row-level scale has no place in the
// rows-of-fixed-blocks model that every loader, backend and test shares. Made in memory only
// (never overlaid on a file), so the float scale is 4-byte aligned.
struct BlockF8_64 {
  float scale;
  uint8_t qs[64];
};
// AWQ / GPTQ int4: one block per group of G values along a row (the checkpoint's group_size),
// value = fp16(d) * (q - z). z is the group's integer zero point (AWQ 0..15; GPTQ's classic
// format stores zero - 1, so 1..16 after the + 1), a whole byte so both fit exactly. In each run
// of 32 values, byte j holds element j (low nibble) and element j + 16 (high nibble), as Q4_0
// does, so the GGML formats' nibble unpacking applies. 68 bytes per 128 values: 4.25 bits.
template <int G>
struct BlockI4 {
  uint16_t d;  // fp16 scale, as the checkpoints store it
  uint8_t z;
  uint8_t pad;
  uint8_t qs[G / 2];
};
using BlockI4_32 = BlockI4<32>;
using BlockI4_64 = BlockI4<64>;
using BlockI4_128 = BlockI4<128>;

static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_0) == block_bytes(DType::Q8_0));
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_0) == block_bytes(DType::Q4_0));
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ4_1) == block_bytes(DType::Q4_1));
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_0) == block_bytes(DType::Q5_0));
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ5_1) == block_bytes(DType::Q5_1));
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ4_K) == block_bytes(DType::Q4_K));
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ5_K) == block_bytes(DType::Q5_K));
static_assert(sizeof(BlockQ6_K) == 210 && sizeof(BlockQ6_K) == block_bytes(DType::Q6_K));
static_assert(sizeof(BlockF8_64) == block_bytes(DType::F8_B64));
static_assert(sizeof(BlockI4_32) == block_bytes(DType::I4_G32) && sizeof(BlockI4_64) == block_bytes(DType::I4_G64) &&
              sizeof(BlockI4_128) == block_bytes(DType::I4_G128));

// The int4 quant (0..15) of element l of a BlockI4's qs, and its setter (the nibble must be 0).
inline int i4_quant(const uint8_t* qs, int l) { return (qs[16 * (l / 32) + l % 16] >> (4 * ((l % 32) / 16))) & 0x0f; }
inline void i4_set_quant(uint8_t* qs, int l, int q) {
  qs[16 * (l / 32) + l % 16] |= uint8_t((q & 0x0f) << (4 * ((l % 32) / 16)));
}
// The BlockI4 type of a group size (32, 64 or 128), or F32 for any other.
constexpr DType i4_type_for_group(int64_t g) {
  return g == 32 ? DType::I4_G32 : g == 64 ? DType::I4_G64 : g == 128 ? DType::I4_G128 : DType::F32;
}

// The 5-bit quant (0..31) of element l (0..31) of a Q5_0 / Q5_1 block.
inline int q5_quant(const uint8_t* qs, const uint8_t* qh, int l) {
  const int nib = l < 16 ? (qs[l] & 0x0f) : (qs[l - 16] >> 4);
  return nib | (((qh[l / 8] >> (l % 8)) & 1) << 4);
}
// The quant (0..15 / 0..31) of element l (0..31) of sub-block j (0..7) of a Q4_K / Q5_K block.
inline int k_nibble(const uint8_t* qs, int j, int l) { return (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f; }
inline int k_quant(const BlockQ4_K& b, int j, int l) { return k_nibble(b.qs, j, l); }
inline int k_quant(const BlockQ5_K& b, int j, int l) { return k_nibble(b.qs, j, l) | (((b.qh[l] >> j) & 1) << 4); }

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block: the first four
// sub-blocks keep theirs in the low 6 bits of bytes 0..3 / 4..7; the last four keep the low
// 4 bits in bytes 8..11 and the top 2 bits in the spare top bits of bytes 0..7.
inline void q4k_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = uint8_t((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    *mn = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Reference quantizers: n values (a multiple of the block size) -> n / block_elems blocks.
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n);
void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n);
void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n);
void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n);
void quantize_row_q4_k(const float* x, BlockQ4_K* y, int64_t n);
void quantize_row_q5_k(const float* x, BlockQ5_K* y, int64_t n);
void quantize_row_q6_k(const float* x, BlockQ6_K* y, int64_t n);
// F8_B64 with one scale for all of x (a matrix row: per-channel FP8, which the CUDA backend's FP8
// tensor-core GEMM multiplies directly) at amax / 448; I4_G* with the block's [min, max] (widened
// to hold 0) over 15 steps, as the reference round-to-nearest quantizers of those formats do.
void quantize_row_f8_b64(const float* x, BlockF8_64* y, int64_t n);
template <int G>
void quantize_row_i4(const float* x, BlockI4<G>* y, int64_t n);
// Dispatch on dtype; plain types (F32/F16/BF16) are converted. dst holds row_bytes(t, n).
void quantize_row(DType t, const float* x, void* dst, int64_t n);

}  // namespace greta
