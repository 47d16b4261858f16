// greta info: what a model file holds -- architecture, dimensions, tensor formats and sizes.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"

namespace greta::cli {

namespace {

struct InfoOptions {
  std::string model;
  bool json = false;
  bool tensors = false;
};

void info(const InfoOptions& o) {
  auto f = ModelFile::open(resolve_model_path(o.model));
  const ModelConfig& c = f->config();
  std::map<std::string, std::pair<int, size_t>> by_type;  // dtype -> (count, bytes)
  size_t total_bytes = 0;
  int64_t total_params = 0;
  for (const HostTensor* t : f->all_tensors()) {
    auto& e = by_type[std::string(dtype_name(t->dtype))];
    e.first++;
    e.second += t->nbytes;
    total_bytes += t->nbytes;
    total_params += t->numel();
  }
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
                      {"parameters", total_params},
                      {"bytes", total_bytes}};
  for (auto& [type, e] : by_type) j["tensor_types"][type] = {{"count", e.first}, {"bytes", e.second}};
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
  std::printf("rope          theta %g, %s pairs%s\n", c.rope_theta, c.rope_neox ? "half" : "adjacent",
              c.rope_freq_factors.empty() ? "" : ", scaled");
  std::printf("norm eps      %g\n", c.norm_eps);
  std::printf("embeddings    %s\n", c.tied_embeddings ? "tied" : "separate output");
  std::printf("qkv bias      %s\n", c.qkv_bias ? "yes" : "no");
  std::printf("tensor types \n");
  for (auto& [type, e] : by_type)
    std::printf("  %-6s %4d tensors %10.2f MiB\n", type.c_str(), e.first, e.second / 1048576.0);
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
  sub->add_flag("--json", o->json, "print JSON");
  sub->add_flag("--tensors", o->tensors, "list every tensor");
  sub->callback([o] { info(*o); });
}

}  // namespace greta::cli
