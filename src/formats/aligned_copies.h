// The backends read tensor data through typed pointers (float*, uint16_t*, quant block structs
// of 16-bit fields), which is undefined behaviour unless the data starts at a multiple of its
// type's alignment. A file can place data anywhere (GGUF general.alignment = 1, safetensors
// offsets are byte offsets after a header of any length); such tensors are copied here into
// aligned memory that lives as long as the file object, and point there instead.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "core/host_tensor.h"

namespace greta {

// The alignment the backends need for data of this type.
size_t tensor_data_alignment(DType t);

class AlignedCopies {
 public:
  // Leaves t alone when t.data is aligned for t.dtype, else points it at an aligned copy.
  void align(HostTensor& t);
  size_t bytes() const { return bytes_; }  // total copied

 private:
  std::vector<std::unique_ptr<uint64_t[]>> buffers_;  // operator new aligns to at least 8
  size_t bytes_ = 0;
};

}  // namespace greta
