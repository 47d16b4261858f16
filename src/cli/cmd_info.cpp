// greta info: what a model file holds -- architecture, dimensions, tensor formats and sizes.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/kv_cache_dtype.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "model/quantize_on_load.h"

namespace greta::cli {

namespace {

struct InfoOptions {
  std::string model;
  std::string quantize;  // show the model as --quantize TYPE would load it
  bool json = false;
  bool tensors = false;
};

void info(const InfoOptions& o) {
  auto f = ModelFile::open(resolve_model_path(o.model));
  if (!o.quantize.empty()) f->quantize(parse_quant_type(o.quantize));
  const ModelConfig& c = f->config();
  const std::vector<ModelFile::TypeTotal> types = f->type_totals();
  size_t total_bytes = 0;
  int64_t total_params = 0;
  for (const HostTensor* t : f->all_tensors()) total_params += t->numel();
  for (const ModelFile::TypeTotal& e : types) total_bytes += e.bytes;
  nlohmann::json j = {{"path", f->path()},
                      {"format", f->format()},
                      {"name", c.name},
                      {"architecture", c.arch},
                      {"layers", c.n_layers},
                      {"dim", c.dim},
                      {"heads", c.n_heads},
                      {"kv_heads", c.n_kv_heads},
                      {"head_dim", c.head_dim},
                      {"ffn_dim", c.ffn_dim},
                      {"vocab", c.vocab_size},
                      {"context", c.max_context},
                      {"rope_theta", c.rope_theta},
                      {"rope_pairs", c.rope_neox ? "halves (neox)" : "adjacent"},
                      {"rope_scaled", !c.rope_freq_factors.empty()},
                      {"norm_eps", c.norm_eps},
                      {"tied_embeddings", c.tied_embeddings},
                      {"qkv_bias", c.qkv_bias},
                      {"qk_norm", c.qk_norm},
                      {"parameters", total_params},
                      {"bytes", total_bytes}};
  // What only some families have (Gemma 2/3, Mistral, Qwen3-MoE / Mixtral), where the model has it.
  int windowed = 0;
  for (int l = 0; l < c.n_layers; ++l) windowed += c.layer_window(l) > 0;
  if (c.sliding_window > 0) {
    j["sliding_window"] = c.sliding_window;
    j["windowed_layers"] = windowed;
    if (c.rope_local_theta > 0) j["rope_local_theta"] = c.rope_local_theta;
  }
  if (c.n_experts > 0)
    j["experts"] = {{"count", c.n_experts}, {"per_token", c.n_experts_used}, {"renormalised", c.expert_weights_norm}};
  if (c.ffn_act == ModelConfig::FfnAct::GeluTanh) j["ffn_activation"] = "gelu_tanh";
  if (c.post_norms) j["post_norms"] = true;
  if (c.attn_softcap > 0) j["attn_softcap"] = c.attn_softcap;
  if (c.final_softcap > 0) j["final_softcap"] = c.final_softcap;
  if (c.attn_scale > 0) j["attn_scale"] = c.attn_scale;  // a scale of its own (Gemma); else 1 / sqrt(head_dim)
  for (const ModelFile::TypeTotal& e : types)
    j["tensor_types"][std::string(dtype_name(e.type))] = {{"count", e.tensors}, {"bytes", e.bytes}};
  if (!o.quantize.empty()) j["quantized_on_load"] = std::string(dtype_name(parse_quant_type(o.quantize)));
  for (const std::string& note : f->load_notes()) j["load_notes"].push_back(note);
  // What a token takes in the KV cache (all layers, K and V) with each --kv-dtype element type.
  const KVCacheDesc kv{c.n_layers, 0, 16, c.n_kv_heads, c.head_dim};
  auto kv_token_bytes = [&](DType t) { return kv.token_layer_bytes(t) * size_t(c.n_layers); };
  for (DType t : {DType::F16, DType::BF16, DType::F8_E4M3})
    j["kv_bytes_per_token"][kv_cache_dtype_name(t)] = kv_token_bytes(t);
  if (o.tensors) {
    for (const HostTensor* t : f->all_tensors())
      j["tensors"].push_back(
          {{"name", t->name}, {"type", dtype_name(t->dtype)}, {"shape", t->shape}, {"bytes", t->nbytes}});
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("model         %s\n", f->path().c_str());
  std::printf("format        %s\n", f->format().c_str());
  std::printf("name          %s\n", c.name.c_str());
  std::printf("architecture  %s\n", c.arch.c_str());
  std::printf("parameters    %.1f M (%.1f MiB)\n", total_params / 1e6, total_bytes / 1048576.0);
  std::printf("layers        %d\n", c.n_layers);
  std::printf("dim           %d (ffn %d)\n", c.dim, c.ffn_dim);
  std::printf("heads         %d (kv %d, head_dim %d)\n", c.n_heads, c.n_kv_heads, c.head_dim);
  std::printf("vocab         %d\n", c.vocab_size);
  std::printf("context       %d\n", c.max_context);
  std::printf("kv cache      %.1f KiB a token in f16 / bf16, %.1f KiB in fp8_e4m3 (--kv-dtype)\n",
              kv_token_bytes(DType::F16) / 1024.0, kv_token_bytes(DType::F8_E4M3) / 1024.0);
  std::printf("rope          theta %g, %s pairs%s\n", c.rope_theta, c.rope_neox ? "half" : "adjacent",
              c.rope_freq_factors.empty() ? "" : ", scaled");
  std::printf("norm eps      %g\n", c.norm_eps);
  std::printf("embeddings    %s\n", c.tied_embeddings ? "tied" : "separate output");
  std::printf("qkv bias      %s\n", c.qkv_bias ? "yes" : "no");
  std::printf("q/k norm      %s\n", c.qk_norm ? "per head" : "no");
  if (c.attn_scale > 0) std::printf("attn scale    %g\n", c.attn_scale);
  if (c.sliding_window > 0)
    std::printf(
        "window        %d positions in %d of %d layers%s\n", c.sliding_window, windowed, c.n_layers,
        c.rope_local_theta > 0 ? (", their rope theta " + std::to_string(int64_t(c.rope_local_theta))).c_str() : "");
  if (c.n_experts > 0)
    std::printf("experts       %d, %d a token%s\n", c.n_experts, c.n_experts_used,
                c.expert_weights_norm ? " (weights renormalised)" : "");
  if (c.ffn_act == ModelConfig::FfnAct::GeluTanh || c.post_norms)
    std::printf("ffn           %s%s\n", c.ffn_act == ModelConfig::FfnAct::GeluTanh ? "GeGLU (gelu tanh)" : "SwiGLU",
                c.post_norms ? ", post norms" : "");
  if (c.attn_softcap > 0 || c.final_softcap > 0)
    std::printf("soft-capping  attention %g, logits %g\n", c.attn_softcap, c.final_softcap);
  std::printf("tensor types  %s\n", o.quantize.empty() ? "" : ("(quantized on load to " + o.quantize + ")").c_str());
  for (const ModelFile::TypeTotal& e : types)
    std::printf("  %-6s %4d tensors %10.2f MiB\n", std::string(dtype_name(e.type)).c_str(), e.tensors,
                e.bytes / 1048576.0);
  std::printf("  total  %4zu tensors %10.2f MiB\n", f->all_tensors().size(), total_bytes / 1048576.0);
  for (const std::string& note : f->load_notes()) std::printf("  note: %s\n", note.c_str());
  if (o.tensors)
    for (const HostTensor* t : f->all_tensors()) {
      std::string shape;
      for (size_t i = 0; i < t->shape.size(); ++i) shape += (i ? " x " : "") + std::to_string(t->shape[i]);
      std::printf("  %-40s %-5s %s\n", t->name.c_str(), std::string(dtype_name(t->dtype)).c_str(), shape.c_str());
    }
}

}  // namespace

void register_info(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* sub = app.add_subcommand("info", "show a model's architecture, dimensions and tensor formats");
  sub->add_option("-m,--model", o->model, "GGUF file or Hugging Face model directory (default model if omitted)");
  sub->add_option("--quantize", o->quantize, "show a float model as --quantize TYPE loads it: " + quant_choice_names())
      ->check(quant_type_check());
  sub->add_flag("--json", o->json, "print JSON");
  sub->add_flag("--tensors", o->tensors, "list every tensor");
  sub->callback([o] { info(*o); });
}

}  // namespace greta::cli
