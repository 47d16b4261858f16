// Row slices of fused weight matrices. Phi-3 stores a layer's q, k and v projections as one
// matrix (HF qkv_proj, GGUF attn_qkv: rows [q; k; v]) and its gate and up projections as another
// (HF gate_up_proj, GGUF ffn_up: rows [gate; up]).
//
// greta splits them at load into the separate q/k/v and gate/up weights every other family has,
// rather than running them fused: each part is a view of the fused tensor's bytes (a row of any
// type, block-quantized ones too, is whole blocks, so rows are byte ranges), nothing is copied,
// and every backend, quantize on load and the fused GPU kernels (QKV + RoPE GEMV, SwiGLU) take
// the parts as they take any model's. One fused GEMV would read the same bytes.
// It also holds the q/k copies reordered for partial rotary embedding (model/partial_rotary.h).
#pragma once
#include <deque>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/host_tensor.h"

namespace greta {

class SplitTensors {
 public:
  struct Part {
    std::string name;
    int64_t rows;
  };
  // Splits the 2-D `fused` [sum of parts' rows, cols] into `parts`, in row order. Throws
  // greta::Error naming the tensor, its shape and the expected one (`what` says what it fuses,
  // `where` is the model path) when the rows do not add up or cols != `cols`.
  void split(const HostTensor& fused, const std::vector<Part>& parts, int64_t cols, const std::string& what,
             const std::string& where);

  // Replaces `t` (a part above or a file tensor) by a copy of it [n_heads * head_dim, cols]
  // whose rows within each head are reordered: new row j = old row order[j]
  // (model/partial_rotary.h). Returns the copy's bytes, for the caller to adjust.
  uint8_t* reorder_heads(const HostTensor& t, int head_dim, const std::vector<int>& order, const std::string& where);

  const HostTensor* find(std::string_view name) const;
  std::vector<const HostTensor*> parts() const;                                   // in the order split
  bool is_fused(std::string_view name) const { return fused_.count(name) != 0; }  // replaced by parts
  bool empty() const { return views_.empty(); }

 private:
  HostTensor& add(const std::string& name);  // a new part, or the existing part of that name

  std::deque<HostTensor> views_;            // a deque never moves its elements when it grows
  std::deque<std::vector<uint8_t>> owned_;  // bytes of reordered copies
  std::map<std::string, HostTensor*, std::less<>> index_;
  std::set<std::string, std::less<>> fused_;  // file tensors the parts replace
};

}  // namespace greta
