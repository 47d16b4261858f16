// Shared pieces of the `greta` commands: model path resolution, device choice,
// sampling flags, and loading a model onto a backend.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace greta::cli {

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// "" -> the default model: $GRETA_MODEL, else models/<default> next to the binary's
// source tree or the current directory. Throws greta::Error saying how to fetch it.
std::string resolve_model_path(const std::string& m);
// "" or "auto" -> "cuda" when a GPU is present, else "cpu".
std::string resolve_device(const std::string& d);

struct ModelOptions {
  std::string model;              // -m
  std::string device;             // --device
  int threads = 0;                // -t
  std::string quantize;           // --quantize TYPE: a float model's matrices in a block type
  std::string synthetic;          // --synthetic NAME (bench, serve)
  std::string dtype = "bf16";     // --dtype for synthetic weights: a float or block type
  std::string kv_dtype = "auto";  // --kv-dtype: the KV cache's element type (backend/kv_cache_dtype.h)
  uint64_t seed = 1;
  void add_to(CLI::App* app);
  void add_synthetic_to(CLI::App* app);
};

// Checks a --quantize value; a bad one is reported with the list of block types.
CLI::Validator quant_type_check();

struct SamplingOptions {
  SamplingParams p;
  void add_to(CLI::App* app);
};

// A model loaded and ready: file (kept alive for zero-copy weights), backend, model, tokenizer.
// load() says on stderr what the weights are stored as (fallbacks of --quantize, types, bytes).
struct Loaded {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string device;
  double load_seconds = 0;
};
Loaded load(const ModelOptions& o, bool need_tokenizer = true);

// The KV cache of L's model: n_blocks blocks of block_size tokens.
KVCacheDesc kv_cache_desc(const Loaded& L, int n_blocks, int block_size);
// The most blocks of block_size tokens that fit in `mib` MiB with L's KV element type (FP8 rows
// take about half the bytes of f16 / bf16 ones). Throws greta::Error when that is no block, or
// more token slots than the cache can address (32-bit).
int kv_blocks_in_mib(const Loaded& L, double mib, int block_size);
// One line on stderr: the KV cache's element type, the tokens it holds and the memory it takes.
void print_kv_cache(const Loaded& L, int n_blocks, int block_size);

double now_seconds();  // monotonic clock
const char* commit_id();

}  // namespace greta::cli
