#include "model/gemma2_hf.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/gemma3.h"
#include "model/owned_tensors.h"

namespace greta {

namespace {

// transformers' Gemma2Config defaults, for a config.json that leaves a key out.
constexpr int kDefaultHeadDim = 256;
constexpr int kDefaultContext = 8192;
constexpr double kDefaultQueryPreAttnScalar = 256.0;
constexpr double kDefaultAttnSoftcap = 50.0, kDefaultFinalSoftcap = 30.0;
constexpr int kDefaultWindow = 4096;
constexpr const char* kActivation = "gelu_pytorch_tanh";

const nlohmann::json* find_key(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

// A soft cap: absent -> `def`; null -> 0, none (transformers skips a cap of None); otherwise a
// finite number > 0 (a cap of 0 would divide by zero).
float read_cap(const nlohmann::json& j, const char* key, double def, const std::string& where) {
  const nlohmann::json* v = find_key(j, key);
  if (!v) return float(def);
  if (v->is_null()) return 0.0f;
  if (!v->is_number()) throw Error(where + ": " + key + " = " + v->dump() + " (expected a finite number > 0 or null)");
  return positive_finite(v->get<double>(), key, where);
}

// One flag per layer, true = windowed: layer_types ("sliding_attention" / "full_attention"), or
// without it Gemma2Config's pattern, layers 0, 2, 4, ... windowed (the GGUF path's period 2).
std::vector<bool> read_layer_types(const nlohmann::json& j, int n_layers, const std::string& where) {
  std::vector<bool> windowed(static_cast<size_t>(n_layers));
  const nlohmann::json* lt = find_key(j, "layer_types");
  if (!lt || lt->is_null()) {
    for (size_t l = 0; l < windowed.size(); ++l) windowed[l] = l % 2 == 0;
    return windowed;
  }
  const std::string expected = " (expected one entry per layer, " + std::to_string(n_layers) +
                               ", each \"sliding_attention\" or \"full_attention\")";
  if (!lt->is_array()) throw Error(where + ": layer_types = " + lt->dump() + expected);
  if (lt->size() != windowed.size())
    throw Error(where + ": layer_types has " + std::to_string(lt->size()) + " entries" + expected);
  for (size_t l = 0; l < windowed.size(); ++l) {
    const nlohmann::json& t = (*lt)[l];
    if (t == "sliding_attention") windowed[l] = true;
    else if (t != "full_attention")
      throw Error(where + ": layer_types[" + std::to_string(l) + "] = " + t.dump() + expected);
  }
  return windowed;
}

}  // namespace

void read_hf_gemma2(const nlohmann::json& j, ModelConfig& c, const std::string& cfg_path) {
  // Gemma2MLP applies hidden_activation; hidden_act, which checkpoints also carry, is not read.
  if (const nlohmann::json* act = find_key(j, "hidden_activation"); act && *act != kActivation)
    throw Error(cfg_path + ": hidden_activation = " + act->dump() +
                " is not implemented for gemma2 (supported: " + kActivation + ")");
  if (const nlohmann::json* bi = find_key(j, "use_bidirectional_attention"); bi && !bi->is_null() && *bi != false)
    throw Error(cfg_path + ": use_bidirectional_attention = " + bi->dump() +
                " is not implemented (greta's attention is causal; expected false or null)");
  auto absent = [&](const char* key) {
    const nlohmann::json* v = find_key(j, key);
    return !v || v->is_null();
  };
  if (absent("head_dim")) c.head_dim = kDefaultHeadDim;
  if (absent("max_position_embeddings")) c.max_context = kDefaultContext;
  if (absent("tie_word_embeddings")) c.tied_embeddings = true;
  set_gemma_layout(c);
  c.attn_softcap = read_cap(j, "attn_logit_softcapping", kDefaultAttnSoftcap, cfg_path);
  c.final_softcap = read_cap(j, "final_logit_softcapping", kDefaultFinalSoftcap, cfg_path);
  if (!find_key(j, "sliding_window")) c.sliding_window = kDefaultWindow;  // null: none, as read
  c.windowed_layers = read_layer_types(j, c.n_layers, cfg_path);
  const bool slides = std::find(c.windowed_layers.begin(), c.windowed_layers.end(), true) != c.windowed_layers.end();
  if (slides && c.sliding_window == 0)
    throw Error(cfg_path +
                ": sliding_window = null, but layers attend within a window (layer_types \"sliding_attention\", "
                "or layers 0, 2, 4, ... without layer_types): expected a positive number of positions");
  double scalar = kDefaultQueryPreAttnScalar;
  if (const nlohmann::json* q = find_key(j, "query_pre_attn_scalar"); q && !q->is_null()) {
    if (!q->is_number())
      throw Error(cfg_path + ": query_pre_attn_scalar = " + q->dump() + " (expected a finite number > 0)");
    positive_finite(q->get<double>(), "query_pre_attn_scalar", cfg_path);
    scalar = q->get<double>();  // in double, as Python takes it
  }
  c.attn_scale = float(std::pow(scalar, -0.5));  // as Gemma2Attention: query_pre_attn_scalar**-0.5
}

std::shared_ptr<OwnedTensors> gemma_norms_plus_one(const SafetensorsModel& st, int n_layers, const std::string& where) {
  std::vector<std::string> names = {"model.norm.weight"};
  for (int l = 0; l < n_layers; ++l)
    for (const char* n :
         {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"})
      names.push_back("model.layers." + std::to_string(l) + "." + n + ".weight");
  auto out = std::make_shared<OwnedTensors>();
  for (const std::string& name : names) {
    const HostTensor* t = st.find_tensor(name);
    if (!t) continue;
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
      throw Error(where + ": tensor '" + name + "' is " + std::string(dtype_name(t->dtype)) +
                  " (a norm weight: expected F32, F16 or BF16)");
    float* w = reinterpret_cast<float*>(out->add(name, DType::F32, t->shape).bytes);
    dequantize_row(t->dtype, t->data, w, t->numel());
    for (int64_t i = 0; i < t->numel(); ++i) w[i] += 1.0f;
  }
  return out;
}

}  // namespace greta
