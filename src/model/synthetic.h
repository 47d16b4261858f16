// Synthetic models: the exact shapes of well-known Llama-family models with seeded random
// weights, made in memory (no file, no download), so 7B-class speed can be measured anywhere.
// Weights are uniform in +-1/sqrt(n_in) (activations stay O(1) through the layers); norms are 1.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/host_tensor.h"
#include "model/config.h"

namespace greta {

// Names: llama-2-7b, llama-2-13b, llama-2-70b, llama-3-8b, smollm2-135m, tiny (4 layers, dim 512,
// GQA 8/2, vocab 1000: for tests). Throws greta::Error listing them for anything else.
ModelConfig synthetic_config(const std::string& name);
std::vector<std::string> synthetic_names();

// Owns the tensors, named as in GGUF (blk.N.attn_q.weight, ...). dtype: F32, F16 or BF16.
class SyntheticWeights {
 public:
  SyntheticWeights(const ModelConfig& cfg, DType dtype, uint64_t seed);
  const HostTensor* find(const std::string& name) const;
  std::vector<const HostTensor*> tensors() const;

 private:
  void add(const std::string& name, std::vector<int64_t> shape, bool is_norm);
  DType dtype_;
  uint64_t seed_;
  std::vector<HostTensor> tensors_;
  std::vector<std::unique_ptr<uint8_t[]>> storage_;
};

}  // namespace greta
