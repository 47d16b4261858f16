#include "cli/common.h"

#include <unistd.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "backend/backend_env.h"
#include "backend/backend_factory.h"
#include "backend/kv_cache_dtype.h"
#include "cli/arg_checks.h"
#include "core/error.h"
#include "model/llama.h"
#include "model/quantize_on_load.h"
#include "model/synthetic.h"

#ifndef GRETA_COMMIT
#define GRETA_COMMIT "unknown"
#endif

namespace greta::cli {

namespace fs = std::filesystem;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const char* commit_id() { return GRETA_COMMIT; }

std::string resolve_model_path(const std::string& m) {
  if (!m.empty()) return m;
  if (const char* env = std::getenv("GRETA_MODEL"); env && *env) return env;
  std::vector<fs::path> candidates = {fs::current_path() / "models" / kDefaultModelFile};
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    // build/greta -> <repo>/models; also one level up for nested build dirs.
    candidates.push_back(exe.parent_path().parent_path() / "models" / kDefaultModelFile);
    candidates.push_back(exe.parent_path().parent_path().parent_path() / "models" / kDefaultModelFile);
  }
  for (const auto& c : candidates)
    if (fs::exists(c, ec)) return c.string();
  throw Error(std::string("no -m given and the default model (") + kDefaultModelFile +
              ") was not found in ./models; run scripts/fetch-default-model.sh or pass -m MODEL");
}

std::string resolve_device(const std::string& d) {
  if (d.empty() || d == "auto") return cuda_available() ? "cuda" : "cpu";
  return d;
}

namespace {

const char* kFloatTypes[] = {"bf16", "f16", "f32"};

// --dtype value -> DType: a float type or a block type of quant_choices().
DType weight_type(const std::string& name) {
  for (const char* f : kFloatTypes)
    if (name == f) return name == "f32" ? DType::F32 : name == "f16" ? DType::F16 : DType::BF16;
  try {
    return parse_quant_type(name);
  } catch (const Error&) {
    throw Error("unknown weight type '" + name + "' (choices: bf16, f16, f32, " + quant_choice_names() + ")");
  }
}

// A value check that takes its message from the parser's greta::Error (which lists the choices).
template <class Parse>
CLI::Validator parses_as(Parse parse, const std::string& what) {
  return CLI::Validator(
      [parse](std::string& v) -> std::string {
        try {
          parse(v);
          return std::string();
        } catch (const Error& e) {
          return e.what();
        }
      },
      what);
}

void print_weight_summary(const ModelFile& f) {
  for (const std::string& note : f.load_notes()) std::fprintf(stderr, "greta: %s\n", note.c_str());
  std::string types;
  size_t bytes = 0;
  for (const ModelFile::TypeTotal& t : f.type_totals()) {
    types += (types.empty() ? "" : ", ") + std::string(dtype_name(t.type)) + " x" + std::to_string(t.tensors);
    bytes += t.bytes;
  }
  std::fprintf(stderr, "greta: weights %s: %.1f MiB on the host\n", types.c_str(), bytes / 1048576.0);
}

}  // namespace

CLI::Validator quant_type_check() {
  return parses_as([](const std::string& v) { return parse_quant_type(v); }, "TYPE");
}

void ModelOptions::add_to(CLI::App* app) {
  app->add_option("-m,--model", model, "GGUF file or Hugging Face model directory (default: SmolLM2-135M-Instruct)");
  app->add_option("--device", device, "cpu, cuda, cuda:N or auto (default: cuda when a GPU is present)");
  app->add_option("-t,--threads", threads, "CPU threads (default: all cores)")->check(integer_in(0, 1024));
  app->add_option(
         "--quantize", quantize,
         "store a float (f32/f16/bf16) model's weight matrices in a block type as it loads (GGUF types, fp8, int4): " +
             quant_choice_names())
      ->check(quant_type_check());
  app->add_option("--kv-dtype", kv_dtype, std::string("KV cache element type: ") + kv_cache_dtype_choices())
      ->check(parses_as(parse_kv_cache_dtype, "TYPE"));
}

void ModelOptions::add_synthetic_to(CLI::App* app) {
  std::string shapes;
  for (const std::string& n : synthetic_names()) shapes += (shapes.empty() ? "" : ", ") + n;
  app->add_option("--synthetic", synthetic, "random-weight model of a known shape instead of -m: " + shapes);
  app->add_option("--dtype", dtype, "synthetic weight type: bf16, f16, f32 or a block type: " + quant_choice_names())
      ->check(parses_as(weight_type, "TYPE"));
  app->add_option("--seed", seed, "synthetic weight seed")->check(integer_in(0, UINT64_MAX));
}

void SamplingOptions::add_to(CLI::App* app) {
  app->add_option("--temp", p.temperature, "temperature; 0 = greedy")->check(number_in(0.0, 100.0));
  app->add_option("--top-k", p.top_k, "keep the k most likely tokens (0 = off)")->check(integer_in(0, 1 << 30));
  app->add_option("--top-p", p.top_p, "nucleus sampling mass (1 = off)")->check(number_in(0.0, 1.0));
  app->add_option("--min-p", p.min_p, "drop tokens below min-p x the top probability (0 = off)")
      ->check(number_in(0.0, 1.0));
  app->add_option("--repeat-penalty", p.repeat_penalty, "penalty for recently seen tokens (1 = off)")
      ->check(number_in(0.0, 10.0));
  app->add_option("--repeat-last-n", p.repeat_last_n, "window of the repeat penalty")->check(integer_in(0, 1 << 20));
  app->add_option("--seed", p.seed, "sampling seed (0 = random)")->check(integer_in(0, UINT64_MAX));
}

namespace {

// The model file o names (-m or --synthetic), quantized when o asks; says on stderr what its
// weights are stored as (fallbacks, types, bytes).
std::unique_ptr<ModelFile> open_model_file(const ModelOptions& o) {
  std::unique_ptr<ModelFile> f;
  if (!o.synthetic.empty()) {
    if (!o.model.empty()) throw Error("pass either -m MODEL or --synthetic NAME, not both");
    DType dt = weight_type(o.dtype);
    if (!o.quantize.empty()) {  // made in the block type directly; --dtype names the float type
      if (is_quantized(dt))
        throw Error("--dtype " + o.dtype + " and --quantize " + o.quantize +
                    " both name a block type; pass one (--dtype alone makes synthetic weights of a block type)");
      f = ModelFile::synthetic(o.synthetic, parse_quant_type(o.quantize), o.seed, o.threads, dt);
    } else {
      f = ModelFile::synthetic(o.synthetic, dt, o.seed, o.threads);
    }
  } else {
    f = ModelFile::open(resolve_model_path(o.model));
    if (!o.quantize.empty()) {
      const double t0 = now_seconds();
      const DType q = parse_quant_type(o.quantize);
      f->quantize(q, o.threads);
      std::fprintf(stderr, "greta: quantized to %s on load in %.2f s\n", std::string(dtype_name(q)).c_str(),
                   now_seconds() - t0);
    }
  }
  print_weight_summary(*f);
  return f;
}

}  // namespace

Loaded load(const ModelOptions& o, bool need_tokenizer) {
  Loaded L;
  const double t0 = now_seconds();
  L.device = resolve_device(o.device);
  int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  BackendOptions bo = backend_options_from_env();
  bo.device = L.device;
  bo.cpu.n_threads = threads;
  bo.cpu.kv_dtype = bo.cuda.kv_dtype = parse_kv_cache_dtype(o.kv_dtype);
  L.backend = make_backend(bo);
  // A synthetic shape the backend cannot run is refused before its weights are made (tens of GB
  // for the large shapes).
  if (!o.synthetic.empty()) LlamaModel::check_backend(synthetic_config(o.synthetic), *L.backend);
  L.file = open_model_file(o);
  L.model = std::make_unique<LlamaModel>(*L.file, *L.backend);
  if (need_tokenizer) L.tokenizer = L.file->load_tokenizer();
  L.load_seconds = now_seconds() - t0;
  return L;
}

KVCacheDesc kv_cache_desc(const Loaded& L, int n_blocks, int block_size) {
  const ModelConfig& c = L.model->config();
  return KVCacheDesc{c.n_layers, n_blocks, block_size, c.n_kv_heads, c.head_dim};
}

int kv_blocks_in_mib(const Loaded& L, double mib, int block_size) {
  const size_t per_block = kv_cache_desc(L, 0, block_size).bytes_per_block(L.backend->kv_dtype());
  const double blocks = std::floor(mib * 1048576.0 / double(per_block));
  char what[64];
  std::snprintf(what, sizeof what, "--kv-memory-mib %g", mib);
  if (blocks < 1)
    throw Error(std::string(what) + " holds no KV block of " + std::to_string(block_size) + " tokens (one takes " +
                std::to_string(per_block) + " bytes)");
  if (blocks * block_size > double(INT32_MAX))
    throw Error(std::string(what) + " holds " + std::to_string(int64_t(blocks) * block_size) +
                " token slots, more than the " + std::to_string(INT32_MAX) + " the KV cache can address");
  return int(blocks);
}

void print_kv_cache(const Loaded& L, int n_blocks, int block_size) {
  const KVCacheDesc d = kv_cache_desc(L, n_blocks, block_size);
  const DType t = L.backend->kv_dtype();
  std::fprintf(stderr, "greta: KV cache %s%s: %lld tokens (%d blocks of %d), %.1f MiB, %.1f KiB a token\n",
               kv_cache_dtype_name(t).c_str(), t == DType::F8_E4M3 ? " (a float scale per row)" : "",
               (long long)n_blocks * block_size, n_blocks, block_size,
               double(d.bytes_per_block(t)) * n_blocks / 1048576.0,
               double(d.token_layer_bytes(t)) * d.n_layers / 1024.0);
}

}  // namespace greta::cli
