#include "model/model_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/dynamic_ntk.h"
#include "model/fused_tensors.h"
#include "model/gemma2.h"
#include "model/gemma2_hf.h"
#include "model/gemma3.h"
#include "model/hf_quant.h"
#include "model/longrope.h"
#include "model/moe_config.h"
#include "model/partial_rotary.h"
#include "model/owned_tensors.h"
#include "model/quantize_on_load.h"
#include "model/synthetic.h"
#include "model/yarn.h"
#include "tokenizer/synthetic_vocab.h"

namespace greta {

namespace fs = std::filesystem;

namespace {

// A bias tensor the Llama-family forward has no place for (only q/k/v biases are added).
std::string unsupported_bias(const std::string& name) {
  return "tensor '" + name +
         "': biases of the output and feed-forward projections are not implemented "
         "(supported: q/k/v biases)";
}

const char* kSupported =
    "supported: llama (Llama 2/3/3.1/3.2, SmolLM, TinyLlama, Mixtral), mistral, qwen2, qwen3, qwen3moe, phi3 (Phi-3, "
    "Phi-3.5, Phi-4) (GGUF general.architecture or HF LlamaForCausalLM / MistralForCausalLM / MixtralForCausalLM / "
    "Qwen2ForCausalLM / Qwen3ForCausalLM / Qwen3MoeForCausalLM / Phi3ForCausalLM), gemma2 (Gemma 2, GGUF or HF "
    "Gemma2ForCausalLM), "
    "gemma3 (Gemma 3 text, GGUF only)";

std::string gguf_role_name(int layer, Role r) {
  static const char* names[] = {"attn_norm.weight",    "attn_q.weight",      "attn_k.weight",
                                "attn_v.weight",       "attn_output.weight", "attn_q.bias",
                                "attn_k.bias",         "attn_v.bias",        "ffn_norm.weight",
                                "ffn_gate.weight",     "ffn_up.weight",      "ffn_down.weight",
                                "attn_q_norm.weight",  "attn_k_norm.weight", "post_attention_norm.weight",
                                "post_ffw_norm.weight"};
  return "blk." + std::to_string(layer) + "." + names[int(r)];
}

// The last two are Gemma's names. A model with those norms (`gemma`) names its ffn norm
// pre_feedforward_layernorm: its post_attention_layernorm is the attention output's norm.
std::string hf_role_name(int layer, Role r, bool gemma) {
  if (gemma && r == Role::FfnNorm) return "model.layers." + std::to_string(layer) + ".pre_feedforward_layernorm.weight";
  static const char* names[] = {"input_layernorm.weight",
                                "self_attn.q_proj.weight",
                                "self_attn.k_proj.weight",
                                "self_attn.v_proj.weight",
                                "self_attn.o_proj.weight",
                                "self_attn.q_proj.bias",
                                "self_attn.k_proj.bias",
                                "self_attn.v_proj.bias",
                                "post_attention_layernorm.weight",
                                "mlp.gate_proj.weight",
                                "mlp.up_proj.weight",
                                "mlp.down_proj.weight",
                                "self_attn.q_norm.weight",
                                "self_attn.k_norm.weight",
                                "post_attention_layernorm.weight",
                                "post_feedforward_layernorm.weight"};
  return "model.layers." + std::to_string(layer) + "." + names[int(r)];
}

// partial_rotary_factor (Phi-4-mini: 0.75), at the top level or in the RoPE settings, where
// transformers reads it: sets rope_dim = int(head_dim * factor). Only Phi-3's load reorders q/k
// for it (model/partial_rotary.h).
void read_partial_rotary(const nlohmann::json& j, const nlohmann::json* rope, ModelConfig& c,
                         const std::string& where) {
  for (const nlohmann::json* obj : {&j, rope}) {
    if (!obj) continue;
    auto pr = obj->find("partial_rotary_factor");
    if (pr == obj->end() || pr->is_null()) continue;
    const double f = pr->is_number() ? pr->get<double>() : 0.0;
    if (f == 1.0) continue;
    const int rd = int(c.head_dim * f);
    if (!(f > 0.0 && f < 1.0) || rd < 2 || rd % 2 != 0 || c.arch != "phi3")
      throw Error(where + ": partial_rotary_factor = " + pr->dump() +
                  (c.arch != "phi3" ? " (partial rotary embedding is supported for phi3 only)"
                                    : " (expected a number in (0, 1] giving an even number of rotated dims)"));
    c.rope_dim = rd;
  }
}

// The architectures whose modeling code (transformers) applies a "sliding_window": Mistral and
// Phi-3 (mini-4k: 2047). Llama's has none; Qwen2/3 apply theirs only with "use_sliding_window".
bool honours_sliding_window(const std::string& arch) {
  return arch == "mistral" || arch == "mixtral" || arch == "phi3" || arch == "gemma2" || arch == "gemma3";
}

// config.json's sliding window (null or absent: none) for the architectures above. Qwen2 and Qwen3
// apply theirs only with "use_sliding_window" true, and then only to the layers from
// "max_window_layers" on, which greta does not run: refused rather than run wrong.
int hf_sliding_window(const nlohmann::json& j, const ModelConfig& c, const std::string& cfg_path) {
  if (c.arch == "qwen2" || c.arch == "qwen3" || c.arch == "qwen3moe") {
    auto use = j.find("use_sliding_window");
    if (use != j.end() && use->is_boolean() && use->get<bool>())
      throw Error(cfg_path +
                  ": use_sliding_window = true (sliding-window attention in the layers from "
                  "max_window_layers on) is not implemented for " +
                  c.arch);
    return 0;
  }
  auto w = j.find("sliding_window");
  if (!honours_sliding_window(c.arch) || w == j.end() || w->is_null()) return 0;
  if (!w->is_number_integer() || w->get<int64_t>() <= 0 || w->get<int64_t>() > (int64_t(1) << 30))
    throw Error(cfg_path + ": sliding_window = " + w->dump() + " (expected a positive number of positions or null)");
  return int(w->get<int64_t>());
}

int positive(int64_t v, const std::string& what, const std::string& where) {
  if (v <= 0 || v > (int64_t(1) << 30))
    throw Error(where + ": " + what + " = " + std::to_string(v) + " (expected a positive size)");
  return int(v);
}

}  // namespace

ModelFile::~ModelFile() = default;

std::unique_ptr<ModelFile> ModelFile::open(const std::string& path) {
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->path_ = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    m->open_hf(path);
  } else if (fs::exists(path, ec)) {
    m->open_gguf(path);
  } else {
    throw Error("model not found: '" + path + "' (expected a .gguf file or a Hugging Face model directory)");
  }
  validate_model_tensors(*m);
  return m;
}

std::unique_ptr<ModelFile> ModelFile::synthetic(const std::string& name, DType dtype, uint64_t seed, int n_threads,
                                                DType keep) {
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->config_ = synthetic_config(name);  // throws for unknown names, listing the known ones
  m->path_ = "synthetic:" + name;
  m->format_ = "synthetic";
  m->syn_ = std::make_shared<SyntheticWeights>(m->config_, dtype, seed, n_threads, keep);
  m->notes_ = m->syn_->notes();
  validate_model_tensors(*m);
  return m;
}

std::vector<const HostTensor*> ModelFile::matrices() const {
  std::vector<const HostTensor*> v = {token_embedding()};
  if (const HostTensor* o = output()) v.push_back(o);
  for (int l = 0; l < config_.n_layers; ++l) {
    for (Role r : {Role::Wq, Role::Wk, Role::Wv, Role::Wo}) v.push_back(layer_tensor(l, r));
    // A router stays as it is: llama.cpp's quantizer keeps ffn_gate_inp F32 too.
    for (int e = 0; e < std::max(config_.n_experts, 1); ++e)
      for (Role r : {Role::WGate, Role::WUp, Role::WDown})
        v.push_back(config_.n_experts > 0 ? expert_tensor(l, e, r) : layer_tensor(l, r));
  }
  return v;
}

void ModelFile::quantize(DType type, int n_threads) {
  if (!is_quantized(type))
    throw Error("quantize: " + std::string(dtype_name(type)) +
                " is not a block type (choices: " + quant_choice_names() + ")");
  const std::vector<const HostTensor*> mats = matrices();
  for (const HostTensor* t : mats)
    if (!is_float_weight_type(t->dtype))
      throw Error(path_ + ": cannot quantize to " + std::string(dtype_name(type)) + " on load: tensor '" + t->name +
                  "' is already " + std::string(dtype_name(t->dtype)) +
                  " (quantize on load takes a model whose weights are F32, F16 or BF16; run the file as it is)");
  auto q = std::make_shared<OwnedTensors>();
  MatrixQuantizer quantizer(type, n_threads);
  const HostTensor* out_proj = output() ? output() : token_embedding();
  for (const HostTensor* t : mats)
    if (t != out_proj) quantizer.add(*q, *t);
  notes_ = quantizer.fallback_notes();
  const DType out_type = output_projection_type(type, out_proj->cols(), out_proj->dtype);
  if (out_type != out_proj->dtype) MatrixQuantizer(out_type, n_threads).add(*q, *out_proj);
  notes_.push_back("output projection '" + out_proj->name + "' stored as " + std::string(dtype_name(out_type)) +
                   " (finer, as llama.cpp's quantizer and Hugging Face FP8 / int4 checkpoints keep it)");
  quantized_ = std::move(q);
}

std::vector<ModelFile::TypeTotal> ModelFile::type_totals() const {
  std::vector<TypeTotal> v;
  for (const HostTensor* t : all_tensors()) {
    auto it = std::find_if(v.begin(), v.end(), [&](const TypeTotal& e) { return e.type == t->dtype; });
    if (it == v.end()) it = v.insert(v.end(), TypeTotal{t->dtype});
    it->tensors++;
    it->bytes += t->nbytes;
  }
  std::sort(v.begin(), v.end(), [](const TypeTotal& a, const TypeTotal& b) { return a.type < b.type; });
  return v;
}

void ModelFile::open_gguf(const std::string& path) {
  format_ = "gguf";
  gguf_ = std::make_shared<GGUFFile>(GGUFFile::open(path));
  const GGUFFile& g = *gguf_;
  ModelConfig& c = config_;
  c.arch = g.require_string("general.architecture");
  if (c.arch != "llama" && c.arch != "mistral" && c.arch != "qwen2" && c.arch != "qwen3" && c.arch != "qwen3moe" &&
      c.arch != "phi3" && c.arch != "gemma2" && c.arch != "gemma3")
    throw Error(path + ": unsupported architecture '" + c.arch + "'; " + kSupported);
  c.name = g.get_string("general.name").value_or(fs::path(path).stem().string());
  const std::string a = c.arch + ".";
  c.n_layers = positive(g.require_int(a + "block_count"), a + "block_count", path);
  c.dim = positive(g.require_int(a + "embedding_length"), a + "embedding_length", path);
  c.ffn_dim = positive(g.require_int(a + "feed_forward_length"), a + "feed_forward_length", path);
  c.n_heads = positive(g.require_int(a + "attention.head_count"), a + "attention.head_count", path);
  c.n_kv_heads = positive(g.get_int(a + "attention.head_count_kv").value_or(c.n_heads), a + "attention.head_count_kv",
                          path);
  c.head_dim = positive(g.get_int(a + "attention.key_length").value_or(c.dim / c.n_heads), a + "attention.key_length",
                        path);
  c.max_context = positive(g.get_int(a + "context_length").value_or(4096), a + "context_length", path);
  c.norm_eps = positive_finite(g.get_float(a + "attention.layer_norm_rms_epsilon").value_or(1e-5),
                               a + "attention.layer_norm_rms_epsilon", path);
  c.rope_theta = positive_finite(g.get_float(a + "rope.freq_base").value_or(10000.0), a + "rope.freq_base", path);
  // llama.cpp's converter permutes Llama Q/K rows for adjacent-pair RoPE; Qwen2/3 and Phi-3 keep halves.
  c.rope_neox = (c.arch == "qwen2" || c.arch == "qwen3" || c.arch == "qwen3moe" || c.arch == "phi3");
  c.qk_norm = (c.arch == "qwen3" || c.arch == "qwen3moe");
  if (auto rd = g.get_int(a + "rope.dimension_count"); rd && *rd != c.head_dim) {
    if (c.arch != "phi3" || *rd < 2 || *rd > c.head_dim || *rd % 2 != 0)
      throw Error(path + ": " + a + "rope.dimension_count = " + std::to_string(*rd) + " but head_dim = " +
                  std::to_string(c.head_dim) + " (partial rotary embedding: phi3 only, an even count < head_dim)");
    c.rope_dim = int(*rd);  // Phi-4-mini
  }
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  // llama.cpp's converter writes 0 for no window.
  if (auto w = g.get_int(a + "attention.sliding_window"); w && *w > 0 && honours_sliding_window(c.arch))
    c.sliding_window = positive(*w, a + "attention.sliding_window", path);
  const HostTensor* emb = g.find_tensor("token_embd.weight");
  if (!emb) throw Error(path + ": missing tensor 'token_embd.weight'");
  c.vocab_size = positive(g.get_int(a + "vocab_size").value_or(emb->rows()), a + "vocab_size", path);
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  if (const HostTensor* rf = g.find_tensor("rope_freqs.weight")) {
    if (rf->dtype != DType::F32 || rf->numel() != c.head_dim / 2)
      throw Error(path + ": tensor 'rope_freqs.weight' must be F32 of " + std::to_string(c.head_dim / 2) + " values");
    c.rope_freq_factors.resize(c.head_dim / 2);
    std::memcpy(c.rope_freq_factors.data(), rf->data, c.rope_freq_factors.size() * sizeof(float));
    for (size_t i = 0; i < c.rope_freq_factors.size(); ++i)
      positive_finite(c.rope_freq_factors[i], "tensor 'rope_freqs.weight' value " + std::to_string(i), path);
  }
  if (auto st = g.get_string(a + "rope.scaling.type"); st && *st == "linear") {
    const float factor = positive_finite(g.get_float(a + "rope.scaling.factor").value_or(1.0),
                                         a + "rope.scaling.factor", path);
    if (c.rope_freq_factors.empty()) c.rope_freq_factors.assign(c.head_dim / 2, 1.0f);
    for (float& f : c.rope_freq_factors) f *= factor;
  } else if (st && *st == "yarn") {
    read_gguf_yarn(g, c, path);
  } else if (st && *st == "longrope" && c.arch == "phi3") {
    if (!g.find_tensor("rope_factors_long.weight"))
      throw Error(path + ": " + a + "rope.scaling.type 'longrope' needs tensor 'rope_factors_long.weight'");
  } else if (st && *st != "none") {
    throw Error(path + ": unsupported " + a + "rope.scaling.type '" + *st + "' (supported: none, linear, yarn" +
                (c.arch == "phi3" ? ", longrope)" : ")"));
  }
  for (const char* b : {"blk.0.attn_output.bias", "blk.0.ffn_gate.bias", "blk.0.ffn_up.bias", "blk.0.ffn_down.bias"})
    if (g.find_tensor(b)) throw Error(path + ": " + unsupported_bias(b));
  if (c.arch == "phi3") {
    read_gguf_longrope(g, c, path);
    split_fused();
  }
  read_gguf_moe(g, c, path);
  if (c.n_experts > 0) split_experts();
  if (c.arch == "gemma2") read_gguf_gemma2(g, c, path);
  if (c.arch == "gemma3") read_gguf_gemma3(g, c, path);
  // The attention factor is folded into every layer's score scale; llama.cpp gives the local
  // layers, which it does not scale, none.
  if (c.rope_local_theta > 0.0f && c.rope_attn_factor != 1.0f)
    throw Error(path + ": a RoPE attention factor (YaRN) with local-RoPE sliding-window layers is not supported");
}

void ModelFile::open_hf(const std::string& dir) {
  format_ = "safetensors";
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  std::ifstream in(cfg_path);
  if (!in) throw Error("cannot read '" + cfg_path + "' (a Hugging Face model directory needs config.json)");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw Error(cfg_path + ": not valid JSON object");
  auto get_int = [&](const char* k, std::optional<int64_t> def) -> int64_t {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) {
      if (!def) throw Error(cfg_path + ": missing required key '" + k + "' (expected an integer)");
      return *def;
    }
    if (!it->is_number_integer()) throw Error(cfg_path + ": key '" + k + "' must be an integer");
    return it->get<int64_t>();
  };
  auto get_float = [&](const char* k, double def) -> double {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) return def;
    if (!it->is_number()) throw Error(cfg_path + ": key '" + k + "' must be a number");
    return it->get<double>();
  };
  // Absent or null: the default; anything but true/false is an error naming the key (a bare
  // j.value would throw the JSON library's own type error).
  auto get_bool = [&](const char* k, bool def) -> bool {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) return def;
    if (!it->is_boolean()) throw Error(cfg_path + ": key '" + k + "' = " + it->dump() + " must be true or false");
    return it->get<bool>();
  };
  ModelConfig& c = config_;
  auto mt = j.find("model_type");
  if (mt != j.end() && !mt->is_null() && !mt->is_string())
    throw Error(cfg_path + ": key 'model_type' = " + mt->dump() + " must be a string");
  std::string model_type = mt != j.end() && mt->is_string() ? mt->get<std::string>() : "";
  std::string archname;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    archname = j["architectures"][0].get<std::string>();
  if (archname == "LlamaForCausalLM" || model_type == "llama") c.arch = "llama";
  else if (archname == "MistralForCausalLM" || model_type == "mistral") c.arch = "mistral";
  else if (archname == "Qwen2ForCausalLM" || model_type == "qwen2") c.arch = "qwen2";
  else if (archname == "Qwen3ForCausalLM" || model_type == "qwen3") c.arch = "qwen3";
  else if (archname == "Qwen3MoeForCausalLM" || model_type == "qwen3_moe") c.arch = "qwen3moe";
  else if (archname == "MixtralForCausalLM" || model_type == "mixtral") c.arch = "mixtral";
  else if (archname == "Phi3ForCausalLM" || model_type == "phi3") c.arch = "phi3";
  else if (archname == "Gemma2ForCausalLM" || model_type == "gemma2") c.arch = "gemma2";
  else
    throw Error(cfg_path + ": unsupported architecture '" + (archname.empty() ? model_type : archname) + "'; " +
                kSupported);
  c.name = fs::path(dir).filename().string();
  c.n_layers = positive(get_int("num_hidden_layers", std::nullopt), "num_hidden_layers", cfg_path);
  c.dim = positive(get_int("hidden_size", std::nullopt), "hidden_size", cfg_path);
  c.ffn_dim = positive(get_int("intermediate_size", std::nullopt), "intermediate_size", cfg_path);
  c.n_heads = positive(get_int("num_attention_heads", std::nullopt), "num_attention_heads", cfg_path);
  c.n_kv_heads = positive(get_int("num_key_value_heads", c.n_heads), "num_key_value_heads", cfg_path);
  c.head_dim = positive(get_int("head_dim", c.dim / c.n_heads), "head_dim", cfg_path);
  c.vocab_size = positive(get_int("vocab_size", std::nullopt), "vocab_size", cfg_path);
  c.max_context = positive(get_int("max_position_embeddings", 4096), "max_position_embeddings", cfg_path);
  c.norm_eps = positive_finite(get_float("rms_norm_eps", 1e-6), "rms_norm_eps", cfg_path);
  c.rope_theta = positive_finite(get_float("rope_theta", 10000.0), "rope_theta", cfg_path);
  c.rope_neox = true;  // HF checkpoints rotate halves
  c.tied_embeddings = get_bool("tie_word_embeddings", false);
  c.sliding_window = hf_sliding_window(j, c, cfg_path);
  // The feed-forward block is SwiGLU: another activation would run wrong. (Gemma 2's GeGLU:
  // read_hf_gemma2.)
  if (auto act = j.find("hidden_act"); c.arch != "gemma2" && act != j.end() && !act->is_null() &&
                                       !(act->is_string() && (*act == "silu" || *act == "swish")))
    throw Error(cfg_path + ": hidden_act = " + act->dump() + " is not implemented (supported: silu)");
  if (c.arch == "gemma2") read_hf_gemma2(j, c, cfg_path);
  c.qk_norm = (c.arch == "qwen3" || c.arch == "qwen3moe");
  if (c.arch == "qwen3moe" || c.arch == "mixtral") read_hf_moe(j, c, cfg_path);
  // transformers >= 5 writes RoPE settings as "rope_parameters" {rope_theta, rope_type, factor, ...};
  // older checkpoints use "rope_theta" + "rope_scaling". Read both.
  auto rs = j.find("rope_scaling");
  std::string rs_name = "rope_scaling";
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    if (auto th = rp->find("rope_theta"); th != rp->end() && th->is_number())
      c.rope_theta = positive_finite(th->get<double>(), "rope_parameters.rope_theta", cfg_path);
    rs = rp;
    rs_name = "rope_parameters";
  }
  read_partial_rotary(j, rs != j.end() && rs->is_object() ? &*rs : nullptr, c, cfg_path);
  if (rs != j.end() && rs->is_object()) {
    // A scaling number: present and a finite number > 0, or the default.
    auto factor = [&](const char* k, double def) {
      auto it = rs->find(k);
      if (it == rs->end() || it->is_null()) return float(def);
      if (!it->is_number()) throw Error(cfg_path + ": key '" + rs_name + "." + k + "' must be a number");
      return positive_finite(it->get<double>(), rs_name + "." + k, cfg_path);
    };
    auto type_of = [&](const char* k) {
      auto it = rs->find(k);
      return it != rs->end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const std::string type = !type_of("rope_type").empty() ? type_of("rope_type") : type_of("type");
    if (type == "llama3") {
      const float low = factor("low_freq_factor", 1.0), high = factor("high_freq_factor", 4.0);
      if (!(high > low))
        throw Error(cfg_path + ": " + rs_name + ".high_freq_factor = " + std::to_string(high) +
                    " must be greater than low_freq_factor = " + std::to_string(low) + " (llama3 RoPE scaling)");
      const float omp = factor("original_max_position_embeddings", 8192);
      if (omp > float(1 << 30))
        throw Error(cfg_path + ": " + rs_name + ".original_max_position_embeddings = " + std::to_string(omp) +
                    " (expected a positive size)");
      c.rope_freq_factors = llama3_rope_factors(c.head_dim, c.rope_theta, factor("factor", 8.0), low, high, int(omp));
    } else if (type == "linear") {
      c.rope_freq_factors.assign(c.head_dim / 2, factor("factor", 1.0));
    } else if (type == "longrope" || type == "su" || (type == "yarn" && c.arch == "phi3")) {
      // transformers' Phi3Config reads the older names "su" and "yarn" as longrope.
      read_hf_longrope(*rs, rs_name, j, c, cfg_path);
    } else if (type == "yarn") {
      read_hf_yarn(*rs, rs_name, c, cfg_path);
    } else if (type == "dynamic" && c.arch == "phi3") {
      throw Error(cfg_path + ": " + rs_name + " type 'dynamic' on phi3 (transformers' Phi3Config takes longrope only)");
    } else if (type == "dynamic") {
      read_hf_dynamic_ntk(*rs, rs_name, c, cfg_path);
    } else if (!type.empty() && type != "default") {
      throw Error(cfg_path + ": unsupported " + rs_name + " type '" + type +
                  "' (supported: default, linear, llama3, longrope, yarn, dynamic)");
    }
  }
  st_ = std::make_shared<SafetensorsModel>(SafetensorsModel::open_dir(dir));
  HfQuantized hq = load_hf_quantized(j, cfg_path, *st_);
  if (hq.tensors) {
    quantized_ = std::move(hq.tensors);
    replaced_ = std::move(hq.consumed);
    notes_ = std::move(hq.notes);
  }
  c.qkv_bias = st_->find_tensor("model.layers.0.self_attn.q_proj.bias") != nullptr;
  for (const char* b : {"model.layers.0.self_attn.o_proj.bias", "model.layers.0.mlp.gate_proj.bias",
                        "model.layers.0.mlp.up_proj.bias", "model.layers.0.mlp.down_proj.bias"})
    if (st_->find_tensor(b)) throw Error(cfg_path + ": " + unsupported_bias(b));
  if (c.arch == "phi3") split_fused();
  if (c.arch == "gemma2") rewritten_ = gemma_norms_plus_one(*st_, c.n_layers, dir);
  if (!c.tied_embeddings && !find("lm_head.weight")) c.tied_embeddings = true;  // find(): also a quantized lm_head
}

std::unique_ptr<Tokenizer> ModelFile::load_tokenizer() const {
  if (gguf_) return Tokenizer::from_gguf(*gguf_);
  // Random weights come with no vocabulary; a generated one of the right size lets text in and out.
  if (syn_) return synthetic_tokenizer(config_.vocab_size);
  return Tokenizer::from_hf_dir(path_);
}

void ModelFile::split_fused() {
  const ModelConfig& c = config_;
  const int64_t q = int64_t(c.n_heads) * c.head_dim, kv = int64_t(c.n_kv_heads) * c.head_dim;
  auto split = std::make_shared<SplitTensors>();
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string L = std::to_string(l);
    const std::string qkv = st_ ? "model.layers." + L + ".self_attn.qkv_proj.weight" : "blk." + L + ".attn_qkv.weight";
    if (const HostTensor* t = find(qkv))
      split->split(*t, {{layer_name(l, Role::Wq), q}, {layer_name(l, Role::Wk), kv}, {layer_name(l, Role::Wv), kv}},
                   c.dim, "layer " + L + " fused q, k, v", path_);
    // GGUF Phi-3 has no ffn_gate: its ffn_up holds [gate; up] (llama.cpp's fused SwiGLU).
    const std::string gate_up = st_ ? "model.layers." + L + ".mlp.gate_up_proj.weight" : "blk." + L + ".ffn_up.weight";
    if (st_ || !find(layer_name(l, Role::WGate)))
      if (const HostTensor* t = find(gate_up))
        split->split(*t, {{layer_name(l, Role::WGate), c.ffn_dim}, {layer_name(l, Role::WUp), c.ffn_dim}}, c.dim,
                     "layer " + L + " fused gate, up", path_);
  }
  if (c.rope_dim > 0 && c.rope_dim < c.head_dim) {
    if (c.qkv_bias) throw Error(path_ + ": partial rotary embedding with q/k biases is not supported");
    const std::vector<int> order = partial_rotary_order(c.head_dim, c.rope_dim);
    for (int l = 0; l < c.n_layers; ++l)
      for (Role r : {Role::Wq, Role::Wk}) {
        const std::string name = layer_name(l, r);
        const HostTensor* t = split->find(name) ? split->find(name) : find(name);
        if (!t) continue;  // a missing one: validate_model_tensors names it
        const HostTensor src = *t;
        uint8_t* bytes = split->reorder_heads(src, c.head_dim, order, path_);
        if (r == Role::Wq && c.rope_attn_factor != 1.0f)
          scale_pass_through_rows(bytes, src.dtype, src.shape[0], src.shape[1], c.head_dim, c.rope_dim,
                                  1.0f / (c.rope_attn_factor * c.rope_attn_factor), path_ + ": " + name);
      }
  }
  if (!split->empty()) split_ = std::move(split);
}

std::string ModelFile::layer_name(int layer, Role r) const {
  return st_ ? hf_role_name(layer, r, config_.post_norms) : gguf_role_name(layer, r);
}

const HostTensor* ModelFile::find(const std::string& name) const {
  if (quantized_)
    if (const HostTensor* t = quantized_->find(name)) return t;
  if (split_)
    if (const HostTensor* t = split_->find(name)) return t;
  if (rewritten_)
    if (const HostTensor* t = rewritten_->find(name)) return t;
  if (syn_) return syn_->find(name);
  return gguf_ ? gguf_->find_tensor(name) : st_->find_tensor(name);
}

const HostTensor* ModelFile::layer_tensor(int layer, Role r) const { return find(layer_name(layer, r)); }
const HostTensor* ModelFile::token_embedding() const {
  return find(st_ ? "model.embed_tokens.weight" : "token_embd.weight");
}
const HostTensor* ModelFile::output_norm() const { return find(st_ ? "model.norm.weight" : "output_norm.weight"); }
const HostTensor* ModelFile::output() const {
  if (config_.tied_embeddings) return nullptr;
  return find(st_ ? "lm_head.weight" : "output.weight");
}

std::vector<const HostTensor*> ModelFile::all_tensors() const {
  std::vector<const HostTensor*> v;
  if (st_) {
    for (const HostTensor* t : st_->tensors())
      if (!replaced_.count(t->name)) v.push_back(t);
  } else if (syn_) {
    v = syn_->tensors();
  } else {
    for (const HostTensor& t : gguf_->tensors()) v.push_back(&t);
  }
  if (split_) {  // the parts in place of the fused matrices
    std::erase_if(v, [&](const HostTensor* t) { return split_->is_fused(t->name); });
    for (const HostTensor* t : split_->parts()) v.push_back(t);
  }
  if (rewritten_)
    for (const HostTensor*& t : v)
      if (const HostTensor* r = rewritten_->find(t->name)) t = r;
  if (quantized_) {
    for (const HostTensor*& t : v)
      if (const HostTensor* q = quantized_->find(t->name)) t = q;
    if (st_)  // weights converted from a quantized checkpoint's packed tensors (AWQ / GPTQ qweight)
      for (const HostTensor* q : quantized_->tensors())
        if (!st_->find_tensor(q->name) && !(split_ && (split_->find(q->name) || split_->is_fused(q->name))))
          v.push_back(q);
  }
  return v;
}

void validate_model_tensors(const ModelFile& f) {
  const ModelConfig& c = f.config();
  auto check = [&](const HostTensor* t, const std::string& what, std::vector<int64_t> shape) {
    if (!t) throw Error(f.path() + ": missing tensor for " + what);
    if (t->shape != shape) {
      auto str = [](const std::vector<int64_t>& s) {
        std::string o = "[";
        for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
        return o + "]";
      };
      throw Error(f.path() + ": tensor '" + t->name + "' (" + what + ") has shape " + str(t->shape) + ", expected " +
                  str(shape));
    }
  };
  const int64_t q = int64_t(c.n_heads) * c.head_dim, kv = int64_t(c.n_kv_heads) * c.head_dim;
  if (c.n_heads % c.n_kv_heads != 0)
    throw Error(f.path() + ": head count " + std::to_string(c.n_heads) + " is not a multiple of kv head count " +
                std::to_string(c.n_kv_heads));
  if (c.head_dim % 2 != 0) throw Error(f.path() + ": head_dim must be even for RoPE");
  check(f.token_embedding(), "token embedding", {c.vocab_size, c.dim});
  check(f.output_norm(), "output norm", {c.dim});
  if (!c.tied_embeddings) check(f.output(), "output projection", {c.vocab_size, c.dim});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string L = "layer " + std::to_string(l) + " ";
    check(f.layer_tensor(l, Role::AttnNorm), L + "attention norm", {c.dim});
    check(f.layer_tensor(l, Role::Wq), L + "q projection", {q, c.dim});
    check(f.layer_tensor(l, Role::Wk), L + "k projection", {kv, c.dim});
    check(f.layer_tensor(l, Role::Wv), L + "v projection", {kv, c.dim});
    check(f.layer_tensor(l, Role::Wo), L + "output projection", {c.dim, q});
    check(f.layer_tensor(l, Role::FfnNorm), L + "ffn norm", {c.dim});
    if (c.n_experts > 0) {
      check(f.router_tensor(l), L + "expert router", {c.n_experts, c.dim});
      for (int e = 0; e < c.n_experts; ++e) {
        const std::string E = L + "expert " + std::to_string(e) + " ";
        check(f.expert_tensor(l, e, Role::WGate), E + "gate", {c.ffn_dim, c.dim});
        check(f.expert_tensor(l, e, Role::WUp), E + "up", {c.ffn_dim, c.dim});
        check(f.expert_tensor(l, e, Role::WDown), E + "down", {c.dim, c.ffn_dim});
      }
    } else {
      check(f.layer_tensor(l, Role::WGate), L + "ffn gate", {c.ffn_dim, c.dim});
      check(f.layer_tensor(l, Role::WUp), L + "ffn up", {c.ffn_dim, c.dim});
      check(f.layer_tensor(l, Role::WDown), L + "ffn down", {c.dim, c.ffn_dim});
    }
    if (c.qk_norm) {
      check(f.layer_tensor(l, Role::QNorm), L + "q norm", {c.head_dim});
      check(f.layer_tensor(l, Role::KNorm), L + "k norm", {c.head_dim});
    }
    if (c.post_norms) {
      check(f.layer_tensor(l, Role::AttnPostNorm), L + "attention output norm", {c.dim});
      check(f.layer_tensor(l, Role::FfnPostNorm), L + "ffn output norm", {c.dim});
    }
    if (c.qkv_bias) {
      check(f.layer_tensor(l, Role::Bq), L + "q bias", {q});
      check(f.layer_tensor(l, Role::Bk), L + "k bias", {kv});
      check(f.layer_tensor(l, Role::Bv), L + "v bias", {kv});
    }
  }
}

}  // namespace greta
