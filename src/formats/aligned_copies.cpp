#include "formats/aligned_copies.h"

#include <cstring>

namespace greta {

size_t tensor_data_alignment(DType t) {
  // Quant blocks and 16-bit floats are read as uint16_t fields; F32/I32 as 32-bit words.
  return (t == DType::F32 || t == DType::I32) ? 4 : 2;
}

void AlignedCopies::align(HostTensor& t) {
  if (t.nbytes == 0 || reinterpret_cast<uintptr_t>(t.data) % tensor_data_alignment(t.dtype) == 0) return;
  auto buf = std::make_unique_for_overwrite<uint64_t[]>((t.nbytes + 7) / 8);
  std::memcpy(buf.get(), t.data, t.nbytes);
  t.data = reinterpret_cast<const uint8_t*>(buf.get());
  buffers_.push_back(std::move(buf));
  bytes_ += t.nbytes;
}

}  // namespace greta
