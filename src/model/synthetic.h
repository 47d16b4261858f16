// Synthetic models: the exact shapes of well-known Llama-family models with seeded random
// weights, made in memory (no file, no download), so 7B-class speed can be measured anywhere.
// Weights are uniform in +-1/sqrt(n_in) (activations stay O(1) through the layers); norms are 1.
// Matrices of a block type (Q4_K, ...) are made from the same float values, quantized as
// --quantize does (model/quantize_on_load.h), so the weights never exist in float all at once.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/host_tensor.h"
#include "model/config.h"
#include "model/owned_tensors.h"

namespace greta {

// Names: llama-2-7b, llama-2-13b, llama-2-70b, llama-3-8b, llama-3.2-1b (tied embeddings),
// phi-3-mini, smollm2-135m, qwen3-8b (q/k norms), gemma-2-9b, gemma-3-1b, tiny (4 layers, dim 512,
// GQA 8/2, vocab 1000: for tests), tiny-qwen3 (tiny with Qwen3's q/k norms and head_dim 128),
// tiny-gemma2 (4 layers in Gemma 2's layout, head_dim 256, window 512), tiny-gemma3 (6 layers in
// Gemma 3's layout, head_dim 256), qwen3-30b-a3b (a mixture of 128 experts, 8 per token),
// tiny-qwen3moe (tiny-qwen3's attention, 8 experts of 256, 2 per token: for tests). Throws
// greta::Error listing them for anything else.
ModelConfig synthetic_config(const std::string& name);
std::vector<std::string> synthetic_names();

// Owns the tensors, named as in GGUF (blk.N.attn_q.weight, ...). Norms are F32; the matrices
// (and the token embedding) are `dtype`: F32, F16, BF16 or a block type of quant_choices(),
// whose rows that no block fits fall back (matrix_type) and stay `keep`, a float type.
// n_threads <= 0: all cores.
class SyntheticWeights {
 public:
  SyntheticWeights(const ModelConfig& cfg, DType dtype, uint64_t seed, int n_threads = 0, DType keep = DType::BF16);
  const HostTensor* find(const std::string& name) const { return tensors_.find(name); }
  std::vector<const HostTensor*> tensors() const { return tensors_.tensors(); }
  // The fallbacks taken (MatrixQuantizer::fallback_notes), for the load log.
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  OwnedTensors tensors_;
  std::vector<std::string> notes_;
};

}  // namespace greta
