#include "model/moe_config.h"

#include "core/error.h"
#include "formats/gguf.h"

namespace greta {

namespace {

// llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX, the router greta runs.
constexpr int64_t kGatingSoftmax = 1;

// The expert counts, checked against each other: 1 <= used <= experts.
void set_counts(ModelConfig& c, int64_t experts, int64_t used, const std::string& experts_key,
                const std::string& used_key, const std::string& where) {
  if (experts < 1 || experts > 65536)
    throw Error(where + ": " + experts_key + " = " + std::to_string(experts) + " (expected 1 .. 65536 experts)");
  if (used < 1 || used > experts)
    throw Error(where + ": " + used_key + " = " + std::to_string(used) + " (expected 1 .. " + experts_key + " = " +
                std::to_string(experts) + ")");
  c.n_experts = int(experts);
  c.n_experts_used = int(used);
}

}  // namespace

void read_gguf_moe(const GGUFFile& g, ModelConfig& c, const std::string& path) {
  const std::string a = c.arch + ".";
  const int64_t experts = g.get_int(a + "expert_count").value_or(0);
  if (c.arch != "llama" && c.arch != "qwen3moe") {
    if (experts > 0 || g.find_tensor("blk.0.ffn_gate_inp.weight"))
      throw Error(path + ": " + c.arch + " with experts (" + a + "expert_count = " + std::to_string(experts) +
                  ") is not supported (mixture of experts: qwen3moe, llama (Mixtral))");
    return;
  }
  if (experts == 0 && c.arch == "llama") {
    if (g.find_tensor("blk.0.ffn_gate_inp.weight"))
      throw Error(path + ": tensor 'blk.0.ffn_gate_inp.weight' (an expert router) but no " + a + "expert_count");
    return;  // a dense Llama
  }
  set_counts(c, experts, g.get_int(a + "expert_used_count").value_or(0), a + "expert_count", a + "expert_used_count",
             path);
  if (c.arch == "qwen3moe") {
    // llama.cpp's fallback for files without the key: the dense size shared by the active experts.
    const std::string key = a + "expert_feed_forward_length";
    const int64_t f = g.get_int(key).value_or(c.ffn_dim / c.n_experts_used);
    if (f < 1 || f > (int64_t(1) << 30))
      throw Error(path + ": " + key + " = " + std::to_string(f) + " (expected a positive size)");
    c.ffn_dim = int(f);
  }
  // llama.cpp renormalises the chosen experts' weights for both (its converters write no key);
  // a file that says otherwise is honoured.
  c.expert_weights_norm = g.get_bool(a + "expert_weights_norm").value_or(true);
  if (auto s = g.get_int(a + "expert_shared_count"); s && *s != 0)
    throw Error(path + ": " + a + "expert_shared_count = " + std::to_string(*s) +
                " (shared experts are not supported)");
  if (auto s = g.get_float(a + "expert_weights_scale"); s && *s != 0.0 && *s != 1.0)
    throw Error(path + ": " + a + "expert_weights_scale = " + std::to_string(*s) +
                " (scaled expert weights are not supported; expected 1)");
  if (auto f = g.get_int(a + "expert_gating_func"); f && *f != kGatingSoftmax)
    throw Error(path + ": " + a + "expert_gating_func = " + std::to_string(*f) + " (supported: 1, softmax)");
  if (g.find_tensor("blk.0.ffn_gate_inp_shexp.weight") || g.find_tensor("blk.0.ffn_gate_shexp.weight"))
    throw Error(path + ": shared-expert tensors (blk.0.ffn_*_shexp) are not supported");
}

void read_hf_moe(const nlohmann::json& j, ModelConfig& c, const std::string& cfg_path) {
  auto int_of = [&](const char* k, int64_t def) -> int64_t {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) return def;
    if (!it->is_number_integer()) throw Error(cfg_path + ": key '" + k + "' must be an integer");
    return it->get<int64_t>();
  };
  const bool qwen = c.arch == "qwen3moe";
  // transformers >= 5 writes Qwen3-MoE's num_experts as num_local_experts (its attribute map).
  const char* experts_key = qwen && j.contains("num_experts") ? "num_experts" : "num_local_experts";
  set_counts(c, int_of(experts_key, 0), int_of("num_experts_per_tok", 0), experts_key, "num_experts_per_tok", cfg_path);
  if (!qwen) {  // Mixtral: intermediate_size is each expert's; the weights always renormalised
    c.expert_weights_norm = true;
    return;
  }
  const int64_t f = int_of("moe_intermediate_size", -1);
  if (f < 1 || f > (int64_t(1) << 30))
    throw Error(cfg_path + ": moe_intermediate_size = " + std::to_string(f) + " (expected a positive size)");
  c.ffn_dim = int(f);
  auto norm = j.find("norm_topk_prob");
  if (norm != j.end() && !norm->is_null() && !norm->is_boolean())
    throw Error(cfg_path + ": key 'norm_topk_prob' must be true or false");
  c.expert_weights_norm = norm != j.end() && norm->is_boolean() && norm->get<bool>();  // transformers' default: false
  // Layers without experts (a dense MLP of intermediate_size) change the layout: not run.
  if (const int64_t step = int_of("decoder_sparse_step", 1); step != 1)
    throw Error(cfg_path + ": decoder_sparse_step = " + std::to_string(step) +
                " (dense layers between the expert layers are not supported; expected 1)");
  auto only = j.find("mlp_only_layers");
  if (only != j.end() && !only->is_null() && !(only->is_array() && only->empty()))
    throw Error(cfg_path + ": mlp_only_layers = " + only->dump() +
                " (dense layers among the expert layers are not supported; expected [])");
  auto shared = j.find("shared_expert_intermediate_size");
  if (shared != j.end() && shared->is_number() && shared->get<double>() != 0)
    throw Error(cfg_path + ": shared_expert_intermediate_size = " + shared->dump() +
                " (shared experts are not supported)");
}

}  // namespace greta
