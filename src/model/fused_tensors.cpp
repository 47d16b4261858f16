#include "model/fused_tensors.h"

#include <cstring>

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
    HostTensor& v = add(p.name);
    v.dtype = fused.dtype;
    v.shape = {p.rows, cols};
    v.data = fused.data + size_t(row0) * rb;
    v.nbytes = size_t(p.rows) * rb;
    row0 += p.rows;
  }
  fused_.insert(fused.name);
}

uint8_t* SplitTensors::reorder_heads(const HostTensor& t, int head_dim, const std::vector<int>& order,
                                     const std::string& where) {
  if (t.shape.size() != 2 || t.shape[0] % head_dim != 0 || order.size() != size_t(head_dim))
    throw Error(where + ": tensor '" + t.name + "' is not whole heads of " + std::to_string(head_dim) + " rows");
  const size_t rb = row_bytes(t.dtype, t.shape[1]);
  std::vector<uint8_t>& bytes = owned_.emplace_back(t.nbytes);
  for (int64_t h = 0; h < t.shape[0] / head_dim; ++h)
    for (int j = 0; j < head_dim; ++j)
      std::memcpy(bytes.data() + size_t(h * head_dim + j) * rb, t.data + size_t(h * head_dim + order[size_t(j)]) * rb,
                  rb);
  const HostTensor src = t;  // t may be the part about to be replaced
  HostTensor& v = add(src.name);
  v.dtype = src.dtype;
  v.shape = src.shape;
  v.data = bytes.data();
  v.nbytes = src.nbytes;
  fused_.insert(src.name);  // a file tensor of that name (unfused q or k) is replaced too
  return bytes.data();
}

HostTensor& SplitTensors::add(const std::string& name) {
  auto it = index_.find(name);
  if (it != index_.end()) return *it->second;
  HostTensor& v = views_.emplace_back();
  v.name = name;
  index_[name] = &v;
  return v;
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
