// A model as found on disk -- a GGUF file or a Hugging Face directory (config.json,
// tokenizer.json, safetensors) -- turned into a ModelConfig plus tensors found by role.
// Nothing is uploaded here; model/weights.h binds these tensors to a backend.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/host_tensor.h"
#include "core/dtype.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace greta {

class GGUFFile;
class OwnedTensors;
class SafetensorsModel;
class SplitTensors;
class SyntheticWeights;

// Tensor roles of one layer / of the model, independent of file naming. AttnPostNorm and
// FfnPostNorm: Gemma 3's norms of the attention and feed-forward outputs.
enum class Role {
  AttnNorm,
  Wq,
  Wk,
  Wv,
  Wo,
  Bq,
  Bk,
  Bv,
  FfnNorm,
  WGate,
  WUp,
  WDown,
  QNorm,
  KNorm,
  AttnPostNorm,
  FfnPostNorm
};

class ModelFile {
 public:
  // `path`: a .gguf file or a directory in Hugging Face layout. Throws greta::Error.
  static std::unique_ptr<ModelFile> open(const std::string& path);
  // A model of a known shape with seeded random weights (model/synthetic.h); its tokenizer is
  // generated (tokenizer/synthetic_vocab.h). dtype: F32, F16, BF16 or a block type of
  // quant_choices() (model/quantize_on_load.h), whose fallback rows stay `keep`.
  static std::unique_ptr<ModelFile> synthetic(const std::string& name, DType dtype, uint64_t seed, int n_threads = 0,
                                              DType keep = DType::BF16);
  ~ModelFile();

  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }
  const std::string& format() const { return format_; }  // "gguf", "safetensors" or "synthetic"
  std::unique_ptr<Tokenizer> load_tokenizer() const;

  // Tensor of a layer role / global tensor; nullptr if the file has none (optional roles).
  const HostTensor* layer_tensor(int layer, Role r) const;
  const HostTensor* token_embedding() const;
  const HostTensor* output_norm() const;
  const HostTensor* output() const;  // nullptr when embeddings are tied
  // A mixture-of-experts layer's (config().n_experts > 0, model/moe_config.h) matrix r of expert
  // e (WGate, WUp [ffn_dim, dim]; WDown [dim, ffn_dim]) and its router [n_experts, dim]; nullptr
  // if the file has none. GGUF's stacked [n_experts, rows, cols] tensors are cut into one view per
  // expert at load (model/moe_tensors.cpp).
  const HostTensor* expert_tensor(int layer, int expert, Role r) const;
  const HostTensor* router_tensor(int layer) const;
  std::vector<const HostTensor*> all_tensors() const;
  // The weights a quantizer stores in a block type: the token embedding, the output projection
  // (when not tied) and every layer's projections (model/quantize_on_load.h says why these).
  std::vector<const HostTensor*> matrices() const;

  // Quantize on load: stores matrices() in block type `type` (with quantize_on_load.h's
  // fallbacks), held here; the tensors above then return the quantized ones. Throws
  // greta::Error when a matrix is not F32, F16 or BF16 (an already quantized model).
  // n_threads <= 0: all cores.
  void quantize(DType type, int n_threads = 0);
  // What loading changed that the load log should say (fallback types), one line each.
  const std::vector<std::string>& load_notes() const { return notes_; }

  struct TypeTotal {
    DType type;
    int tensors = 0;
    size_t bytes = 0;
  };
  // Tensor count and bytes of all_tensors() per type, in DType order.
  std::vector<TypeTotal> type_totals() const;

 private:
  ModelFile() = default;
  const HostTensor* find(const std::string& name) const;
  std::string layer_name(int layer, Role r) const;  // the file's name for a layer role
  std::string expert_name(int layer, int expert, Role r) const;
  std::string router_name(int layer) const;
  void open_gguf(const std::string& path);
  void open_hf(const std::string& dir);
  void split_fused();    // Phi-3's fused q/k/v and gate/up matrices (model/fused_tensors.h)
  void split_experts();  // GGUF's stacked expert matrices, one view per expert

  std::string path_;
  std::string format_;
  ModelConfig config_;
  std::shared_ptr<GGUFFile> gguf_;
  std::shared_ptr<SafetensorsModel> st_;
  std::shared_ptr<SyntheticWeights> syn_;
  // quantize(), or the weights converted from a quantized HF checkpoint: found before the file's tensors
  std::shared_ptr<OwnedTensors> quantized_;
  std::shared_ptr<SplitTensors> split_;          // row slices of fused matrices, found before the file's
  std::shared_ptr<OwnedTensors> rewritten_;      // file tensors rewritten at load (HF Gemma norms as 1 + w)
  std::set<std::string, std::less<>> replaced_;  // file tensors folded into quantized_ (qweight, scales, ...)
  std::vector<std::string> notes_;
};

// Checks every tensor the forward needs is present with the shape the config implies;
// throws greta::Error naming the tensor, its shape and the expected one.
void validate_model_tensors(const ModelFile& f);

}  // namespace greta
