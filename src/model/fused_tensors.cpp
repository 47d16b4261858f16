#include "model/fused_tensors.h"

#include "core/error.h"

namespace greta {

void SplitTensors::split(const HostTensor& fused, const std::vector<Part>& parts, int64_t cols, const std::string& what,
                         const std::string& where) {
  int64_t rows = 0;
  std::string expected;
  for (const Part& p : parts) {
    rows += p.rows;
    expected += (expected.empty() ? "" : " + ") + std::to_string(p.rows);
  }
  if (fused.shape.size() != 2 || fused.shape[0] != rows || fused.shape[1] != cols) {
    std::string shape;
    for (int64_t d : fused.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    throw Error(where + ": tensor '" + fused.name + "' (" + what + ") has shape [" + shape + "], expected [" +
                expected + ", " + std::to_string(cols) + "]");
  }
  const size_t rb = row_bytes(fused.dtype, cols);
  if (rb * size_t(rows) != fused.nbytes)
    throw Error(where + ": tensor '" + fused.name + "' holds " + std::to_string(fused.nbytes) + " bytes, expected " +
                std::to_string(rb * size_t(rows)) + " for its shape");
  int64_t row0 = 0;
  for (const Part& p : parts) {
    HostTensor& v = views_.emplace_back();
    v.name = p.name;
    v.dtype = fused.dtype;
    v.shape = {p.rows, cols};
    v.data = fused.data + size_t(row0) * rb;
    v.nbytes = size_t(p.rows) * rb;
    index_[v.name] = &v;
    row0 += p.rows;
  }
  fused_.insert(fused.name);
}

const HostTensor* SplitTensors::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<const HostTensor*> SplitTensors::parts() const {
  std::vector<const HostTensor*> v;
  for (const HostTensor& t : views_) v.push_back(&t);
  return v;
}

}  // namespace greta
