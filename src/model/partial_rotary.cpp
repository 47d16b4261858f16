#include "model/partial_rotary.h"

#include <cstddef>
#include <cstring>

#include "core/error.h"
#include "core/quant_blocks.h"

namespace greta {

namespace {

void scale_fp16(uint16_t& h, float c) { h = float_to_fp16(fp16_to_float(h) * c); }

// Blocks of type B at `row`, n_blocks of them, each scaled through `f` (unaligned: copied).
template <class B, class F>
void scale_blocks(uint8_t* row, int64_t n_blocks, F f) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    B blk;
    std::memcpy(&blk, row + b * int64_t(sizeof(B)), sizeof(B));
    f(blk);
    std::memcpy(row + b * int64_t(sizeof(B)), &blk, sizeof(B));
  }
}

void scale_row(uint8_t* row, DType t, int64_t cols, float c, const std::string& name) {
  const int64_t nb = cols / block_elems(t);
  switch (t) {
    case DType::F32:
      for (int64_t i = 0; i < cols; ++i) {
        float v;
        std::memcpy(&v, row + 4 * i, 4);
        v *= c;
        std::memcpy(row + 4 * i, &v, 4);
      }
      return;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < cols; ++i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        h = t == DType::F16 ? float_to_fp16(fp16_to_float(h) * c) : float_to_bf16(bf16_to_float(h) * c);
        std::memcpy(row + 2 * i, &h, 2);
      }
      return;
    case DType::Q8_0: return scale_blocks<BlockQ8_0>(row, nb, [&](BlockQ8_0& b) { scale_fp16(b.d, c); });
    case DType::Q4_0: return scale_blocks<BlockQ4_0>(row, nb, [&](BlockQ4_0& b) { scale_fp16(b.d, c); });
    case DType::Q5_0: return scale_blocks<BlockQ5_0>(row, nb, [&](BlockQ5_0& b) { scale_fp16(b.d, c); });
    case DType::Q6_K: return scale_blocks<BlockQ6_K>(row, nb, [&](BlockQ6_K& b) { scale_fp16(b.d, c); });
    case DType::Q4_1:
      return scale_blocks<BlockQ4_1>(row, nb, [&](BlockQ4_1& b) { scale_fp16(b.d, c), scale_fp16(b.m, c); });
    case DType::Q5_1:
      return scale_blocks<BlockQ5_1>(row, nb, [&](BlockQ5_1& b) { scale_fp16(b.d, c), scale_fp16(b.m, c); });
    case DType::Q4_K:
      return scale_blocks<BlockQ4_K>(row, nb, [&](BlockQ4_K& b) { scale_fp16(b.d, c), scale_fp16(b.dmin, c); });
    case DType::Q5_K:
      return scale_blocks<BlockQ5_K>(row, nb, [&](BlockQ5_K& b) { scale_fp16(b.d, c), scale_fp16(b.dmin, c); });
    default:
      throw Error("tensor '" + name + "' is " + std::string(dtype_name(t)) +
                  ": partial rotary embedding with an attention factor needs F32, F16, BF16 or a GGUF block type");
  }
}

}  // namespace

std::vector<int> partial_rotary_order(int head_dim, int rope_dim) {
  const int half = head_dim / 2, rhalf = rope_dim / 2, pass_half = half - rhalf;
  std::vector<int> order(size_t(head_dim), 0);
  for (int j = 0; j < half; ++j) {
    if (j < rhalf) {  // a rotated pair: (j, j + rope_dim/2) in the checkpoint
      order[size_t(j)] = j;
      order[size_t(j + half)] = j + rhalf;
    } else {  // two pass-through dims of the checkpoint's tail [rope_dim, head_dim)
      order[size_t(j)] = rope_dim + (j - rhalf);
      order[size_t(j + half)] = rope_dim + pass_half + (j - rhalf);
    }
  }
  return order;
}

void scale_pass_through_rows(uint8_t* bytes, DType type, int64_t n_rows, int64_t cols, int head_dim, int rope_dim,
                             float c, const std::string& name) {
  const size_t rb = row_bytes(type, cols);
  const int half = head_dim / 2, rhalf = rope_dim / 2;
  for (int64_t r = 0; r < n_rows; ++r) {
    const int j = int(r % head_dim) % half;  // slots [rope_dim/2, head_dim/2) of either half pass through
    if (j >= rhalf) scale_row(bytes + size_t(r) * rb, type, cols, c, name);
  }
}

}  // namespace greta
