// A tensor as it sits in a model file: non-owning view into the file's bytes.
// shape is outermost-first (PyTorch order): a linear weight is [n_out, n_in]
// and each of its n_out rows holds n_in values (in blocks, for quantized types).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace greta {

struct HostTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // outermost first
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // For 2-D weights: rows (= n_out) and cols (= n_in). A 1-D tensor is one row.
  int64_t rows() const { return shape.size() >= 2 ? numel() / shape.back() : 1; }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

// Converts n values of a plain (F32/F16/BF16) or quantized row to float.
// Used by loaders that must convert (e.g. GPU upload of GGUF today) and by tests.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

}  // namespace greta
