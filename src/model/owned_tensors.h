// Tensors made in memory while a model loads (synthetic weights, weights quantized on load),
// each owning its bytes. A HostTensor pointer handed out stays valid as long as this object:
// the backends may use the bytes in place (the CPU backend does), like a file mapping's.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/host_tensor.h"

namespace greta {

class OwnedTensors {
 public:
  struct Added {
    const HostTensor* tensor;
    uint8_t* bytes;  // tensor->nbytes, uninitialised, for the caller to fill
  };
  // Adds a tensor with room for its bytes (rows x row_bytes(dtype, cols)). The name must be new.
  Added add(std::string name, DType dtype, std::vector<int64_t> shape) {
    Entry& e = entries_.emplace_back();
    e.t.name = std::move(name);
    e.t.dtype = dtype;
    e.t.shape = std::move(shape);
    e.t.nbytes = size_t(e.t.rows()) * row_bytes(dtype, e.t.cols());
    e.bytes.reset(new uint8_t[e.t.nbytes]);
    e.t.data = e.bytes.get();
    index_[e.t.name] = &e.t;
    return {&e.t, e.bytes.get()};
  }
  const HostTensor* find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
  }
  std::vector<const HostTensor*> tensors() const {  // in the order added
    std::vector<const HostTensor*> v;
    for (const Entry& e : entries_) v.push_back(&e.t);
    return v;
  }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    HostTensor t;
    std::unique_ptr<uint8_t[]> bytes;
  };
  std::deque<Entry> entries_;  // a deque never moves its elements when it grows
  std::map<std::string, const HostTensor*, std::less<>> index_;
};

}  // namespace greta
