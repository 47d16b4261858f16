// How a quantized weight [m, k] lies in device memory: its blocks (GGUF's, and the Hugging Face
// FP8 / int4 block types of core/quant_blocks.h) split into planes, so a lane of the decode GEMV
// reads the quants of one 32-value group with a single 16-byte load and its scales with one
// small load. Same bytes per weight as the blocks (plus < 1 KiB of alignment per tensor); the
// repack runs on the device at upload (quant_repack.cu).
//
// Groups: a "group" is 32 consecutive values of a row, the unit of every plane:
//   q   the low 4 bits of each value (8 bits for Q8_0 and F8_B64), 16 B a group (32 B for 8-bit)
//   hi  the bits above 4: 1 bit a value (Q5_*: 4 B a group), 2 bits (Q6_K: 8 B a group)
//   sc  the group's scale record: fp16 d (Q8_0, Q4_0, Q5_0: 2 B a group), fp16 (d, m)
//       (Q4_1, Q5_1: 4 B a group), or per 256-value super-block the format's own 16 bytes
//       (Q4_K, Q5_K: d, dmin, 12 bytes of 6-bit scales and mins; Q6_K: 16 int8 scales);
//       F8_B64: the fp32 scale per 64 values (4 B per 2 groups); I4_G*: per G values the
//       block's 4-byte record (fp16 d, uint8 zero point, a pad byte)
//   d   Q6_K only: its fp16 super-block scale, 2 B a super-block
// Each plane is row-major ([m][bytes per row]) and starts 256-byte aligned. Rows are whole
// blocks (the upload checks k % block_elems), so every plane row is whole records.
//
// Order inside a group (4-bit formats, I4_G* included), chosen so that one shift and one mask
// give two values as the halves of a bf16x2 word: 32-bit word s (0..3) of the group's 16 bytes
// holds values 8s .. 8s+7, nibble p (bits 4p..4p+3) being value 8s + 2p for p < 4 and value
// 8s + 2(p-4) + 1 for p >= 4; so (word >> 4p) & 0x000F000F is the pair (8s+2p, 8s+2p+1).
// The high bits follow the same pairing (Q5_*: bit 4s+p and bit 16+4s+p of the group's word;
// Q6_K: 2-bit fields 2(4(s%2)+p) and 16+2(4(s%2)+p) of word s/2). Q8_0 and F8_B64 keep their
// bytes in order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

#if defined(__CUDACC__)
#define GRETA_HD __host__ __device__
#else
#define GRETA_HD
#endif

namespace greta::cuda {

struct QuantPlanes {  // byte offsets from the weight's base pointer
  size_t q = 0, hi = 0, sc = 0, d = 0, total = 0;
};

GRETA_HD constexpr size_t align_plane(size_t b) { return (b + 255) / 256 * 256; }

GRETA_HD constexpr bool byte_quants(DType t) { return t == DType::Q8_0 || t == DType::F8_B64; }
GRETA_HD constexpr bool int4_format(DType t) { return t == DType::I4_G32 || t == DType::I4_G64 || t == DType::I4_G128; }
// Values per scale record of an I4_G* format (its block size).
GRETA_HD constexpr int int4_group(DType t) { return t == DType::I4_G32 ? 32 : t == DType::I4_G64 ? 64 : 128; }

// Bytes a row of k values takes in each plane (0: plane absent).
GRETA_HD constexpr size_t plane_q_row(DType t, int64_t k) { return size_t(byte_quants(t) ? k : k / 2); }
GRETA_HD constexpr size_t plane_hi_row(DType t, int64_t k) {
  return t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q5_K ? size_t(k / 8)
         : t == DType::Q6_K                                       ? size_t(k / 4)
                                                                  : 0;
}
GRETA_HD constexpr size_t plane_sc_row(DType t, int64_t k) {
  return t == DType::F8_B64                                         ? size_t(k / 64) * 4
         : int4_format(t)                                           ? size_t(k / int4_group(t)) * 4
         : t == DType::Q4_1 || t == DType::Q5_1                     ? size_t(k / 32) * 4
         : t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K ? size_t(k / 256) * 16
                                                                    : size_t(k / 32) * 2;
}
GRETA_HD constexpr size_t plane_d_row(DType t, int64_t k) { return t == DType::Q6_K ? size_t(k / 256) * 2 : 0; }

GRETA_HD constexpr QuantPlanes quant_planes(DType t, int64_t m, int64_t k) {
  QuantPlanes p;
  p.q = 0;
  p.hi = align_plane(plane_q_row(t, k) * size_t(m));
  p.sc = p.hi + align_plane(plane_hi_row(t, k) * size_t(m));
  p.d = p.sc + align_plane(plane_sc_row(t, k) * size_t(m));
  p.total = p.d + align_plane(plane_d_row(t, k) * size_t(m));
  return p;
}

// The block formats the device keeps packed (the others are converted to bf16 at upload).
GRETA_HD constexpr bool packed_on_device(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 ||
         t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K || t == DType::F8_B64 || int4_format(t);
}

// The GGUF block formats, whose one-token GEMVs take int8 activations as llama.cpp's MMVQ and the
// CPU backend run them (gemv_dot.cuh). The Hugging Face formats (AWQ/GPTQ int4, FP8) keep bf16
// activations, as their CPU reference (float x) and their usual engines (W4A16, W8A16) do.
GRETA_HD constexpr bool int8_dot_format(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 ||
         t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// Host dispatch on a packed format: F<T>::run(a...) with T = t, or an error for a format the
// device does not keep packed. The one list of the formats' instantiations.
template <template <DType> class F, class... A>
void on_packed_format(DType t, A&&... a) {
  switch (t) {
    case DType::Q8_0: F<DType::Q8_0>::run(a...); break;
    case DType::Q4_0: F<DType::Q4_0>::run(a...); break;
    case DType::Q4_1: F<DType::Q4_1>::run(a...); break;
    case DType::Q5_0: F<DType::Q5_0>::run(a...); break;
    case DType::Q5_1: F<DType::Q5_1>::run(a...); break;
    case DType::Q4_K: F<DType::Q4_K>::run(a...); break;
    case DType::Q5_K: F<DType::Q5_K>::run(a...); break;
    case DType::Q6_K: F<DType::Q6_K>::run(a...); break;
    case DType::F8_B64: F<DType::F8_B64>::run(a...); break;
    case DType::I4_G32: F<DType::I4_G32>::run(a...); break;
    case DType::I4_G64: F<DType::I4_G64>::run(a...); break;
    case DType::I4_G128: F<DType::I4_G128>::run(a...); break;
    default: throw Error("cuda: " + std::string(dtype_name(t)) + " weights are not kept packed on the device");
  }
}

}  // namespace greta::cuda
