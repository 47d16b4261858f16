// ModelFile's expert tensors (model_file.h): the names each format gives a mixture-of-experts
// layer's router and experts, and GGUF's stacked expert tensors cut into one view per expert.
#include <string>

#include "core/error.h"
#include "model/fused_tensors.h"
#include "model/model_file.h"

namespace greta {

namespace {

int ffn_index(Role r) { return r == Role::WGate ? 0 : r == Role::WUp ? 1 : 2; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

}  // namespace

std::string ModelFile::expert_name(int layer, int expert, Role r) const {
  const std::string L = std::to_string(layer), E = std::to_string(expert);
  const int i = ffn_index(r);
  if (!st_) {  // GGUF: llama.cpp's per-expert names, the views split_experts() makes
    static const char* gguf[] = {"ffn_gate", "ffn_up", "ffn_down"};
    return "blk." + L + "." + gguf[i] + "." + E + ".weight";
  }
  if (config_.arch == "mixtral") {
    static const char* mixtral[] = {"w1", "w3", "w2"};
    return "model.layers." + L + ".block_sparse_moe.experts." + E + "." + mixtral[i] + ".weight";
  }
  static const char* qwen[] = {"gate_proj", "up_proj", "down_proj"};
  return "model.layers." + L + ".mlp.experts." + E + "." + qwen[i] + ".weight";
}

std::string ModelFile::router_name(int layer) const {
  const std::string L = std::to_string(layer);
  if (!st_) return "blk." + L + ".ffn_gate_inp.weight";
  return "model.layers." + L + (config_.arch == "mixtral" ? ".block_sparse_moe.gate.weight" : ".mlp.gate.weight");
}

const HostTensor* ModelFile::expert_tensor(int layer, int expert, Role r) const {
  return find(expert_name(layer, expert, r));
}
const HostTensor* ModelFile::router_tensor(int layer) const { return find(router_name(layer)); }

void ModelFile::split_experts() {
  const ModelConfig& c = config_;
  if (!split_) split_ = std::make_shared<SplitTensors>();
  static const char* stacked[] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string L = std::to_string(l);
    if (find("blk." + L + ".ffn_gate_up_exps.weight"))
      throw Error(path_ + ": tensor 'blk." + L +
                  ".ffn_gate_up_exps.weight' (fused expert gate and up) is not supported; expected "
                  "ffn_gate_exps and ffn_up_exps");
    for (Role r : {Role::WGate, Role::WUp, Role::WDown}) {
      const int i = ffn_index(r);
      const HostTensor* t = find("blk." + L + "." + stacked[i] + ".weight");
      if (!t) continue;  // per-expert tensors, or none: validate_model_tensors names what is missing
      const int64_t rows = r == Role::WDown ? c.dim : c.ffn_dim, cols = r == Role::WDown ? c.ffn_dim : c.dim;
      const std::vector<int64_t> want = {c.n_experts, rows, cols};
      if (t->shape != want)
        throw Error(path_ + ": tensor '" + t->name + "' (layer " + L + " experts) has shape " + shape_str(t->shape) +
                    ", expected " + shape_str(want) + " (experts, rows, cols)");
      // Each expert is whole rows of the stack: a view of its bytes, nothing copied.
      HostTensor flat = *t;
      flat.shape = {c.n_experts * rows, cols};
      std::vector<SplitTensors::Part> parts;
      for (int e = 0; e < c.n_experts; ++e) parts.push_back({expert_name(l, e, r), rows});
      split_->split(flat, parts, cols, "layer " + L + " experts", path_);
    }
  }
  if (split_->empty()) split_.reset();
}

}  // namespace greta
