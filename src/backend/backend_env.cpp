#include "backend/backend_env.h"

#include <cstdlib>

#include "core/error.h"

namespace greta {
namespace {

bool parse_bool(const char* name, const std::string& v) {
  if (v == "1") return true;
  if (v == "0") return false;
  throw Error(std::string(name) + "='" + v + "': expected 0 or 1");
}

int parse_int(const char* name, const std::string& v, int lo, int hi) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < lo || n > hi)
    throw Error(std::string(name) + "='" + v + "': expected an integer in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "]");
  return int(n);
}

// A row per switch. The lambdas stay one line each so the table reads as documentation.
const std::vector<EnvSwitch> kSwitches = {
    {"GRETA_CPU_EXACT_MATMUL", "0|1", "CPU: quantized weights times float activations (reference runs; slow)",
     [](BackendOptions& o, const std::string& v) { o.cpu.exact_matmul = parse_bool("GRETA_CPU_EXACT_MATMUL", v); }},
    {"GRETA_DUMP_DIR", "DIR", "CPU: every op's output saved as DIR/s{step}_{index}_{op}.npy (op-by-op comparisons)",
     [](BackendOptions& o, const std::string& v) { o.cpu.dump_dir = v; }},
    {"GRETA_CUDA_GRAPHS", "0|1", "CUDA: decode steps replayed as CUDA graphs (default 1)",
     [](BackendOptions& o, const std::string& v) { o.cuda.graphs = parse_bool("GRETA_CUDA_GRAPHS", v); }},
    {"GRETA_CUDA_GEMV_MAX_TOKENS", "1..32",
     "CUDA: streaming GEMV up to this many tokens a step, cuBLASLt beyond (default 16)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.gemv_max_tokens = parse_int("GRETA_CUDA_GEMV_MAX_TOKENS", v, 1, 32);
     }},
    {"GRETA_CUDA_PACKED_GEMV_MAX_TOKENS", "1..32",
     "CUDA, packed weights: decode GEMV up to this many tokens a step (default 32)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.packed_gemv_max_tokens = parse_int("GRETA_CUDA_PACKED_GEMV_MAX_TOKENS", v, 1, 32);
     }},
    {"GRETA_CUDA_PACKED_GEMM_MAX_TOKENS", "0..4096",
     "CUDA, packed weights: batched packed GEMM up to this many tokens, dequantized slices + cuBLASLt beyond "
     "(default 64)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.packed_gemm_max_tokens = parse_int("GRETA_CUDA_PACKED_GEMM_MAX_TOKENS", v, 0, 4096);
     }},
    {"GRETA_CUDA_INT8_GEMM_MAX_TOKENS", "0..64",
     "CUDA, GGUF 32-value block formats: steps past the decode GEMV up to this many tokens on the int8 "
     "tensor-core GEMM, every format (default: per format, Q8_0 64, the others 0)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.int8_gemm_max_tokens = parse_int("GRETA_CUDA_INT8_GEMM_MAX_TOKENS", v, 0, 64);
     }},
    {"GRETA_CUDA_PERSISTENT_DECODE", "0|1",
     "CUDA: decode steps of plain Llama-form bf16, Q8_0 or Q4_0 models as one persistent launch (default 0)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.persistent_decode = parse_bool("GRETA_CUDA_PERSISTENT_DECODE", v);
     }},
    {"GRETA_CUDA_PERSISTENT_CLAIMED", "0..50",
     "CUDA, persistent decode step: the last this many percent of each GEMV phase's rows are claimed at run time by "
     "warps done with their share (default 0)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.persistent_claimed = parse_int("GRETA_CUDA_PERSISTENT_CLAIMED", v, 0, 50);
     }},
    {"GRETA_CUDA_PREFILL_TC", "0|1", "CUDA: prompt attention on tensor cores where the head size allows (default 1)",
     [](BackendOptions& o, const std::string& v) { o.cuda.prefill_tc = parse_bool("GRETA_CUDA_PREFILL_TC", v); }},
    {"GRETA_CUDA_SPLITK", "0|1", "CUDA: split-K for GEMVs with few row tiles and a long k (default 1)",
     [](BackendOptions& o, const std::string& v) { o.cuda.split_k = parse_bool("GRETA_CUDA_SPLITK", v); }},
    {"GRETA_CUDA_PACKED_SPLITK_MIN_K", "0..65536",
     "CUDA, GGUF formats with int8 activations: one-token residual GEMVs with few row tiles and k of at least this "
     "split k over 2 blocks (default 0: never)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.packed_split_k_min = parse_int("GRETA_CUDA_PACKED_SPLITK_MIN_K", v, 0, 65536);
     }},
    {"GRETA_CUDA_GEMV_PIPE", "0|1", "CUDA: decode GEMVs software-pipeline their weight stream (default 1)",
     [](BackendOptions& o, const std::string& v) { o.cuda.gemv_pipeline = parse_bool("GRETA_CUDA_GEMV_PIPE", v); }},
    {"GRETA_CUDA_ATTN_LAST_MERGE", "0|1",
     "CUDA: decode attention partitions merged by their last block, not a second kernel (default 1)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.attn_last_merge = parse_bool("GRETA_CUDA_ATTN_LAST_MERGE", v);
     }},
    {"GRETA_CUDA_PACKED_WEIGHTS", "0|1",
     "CUDA: quantized weights (GGUF, FP8, int4) stay in their format on the device (default 1; 0: converted to bf16)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.packed_weights = parse_bool("GRETA_CUDA_PACKED_WEIGHTS", v);
     }},
    {"GRETA_CUDA_INT8_ACTS", "0|1",
     "CUDA, GGUF block formats: one-token GEMVs quantize x to int8 and take dp4a dot products (default 1)",
     [](BackendOptions& o, const std::string& v) { o.cuda.packed_int8_acts = parse_bool("GRETA_CUDA_INT8_ACTS", v); }},
    {"GRETA_CUDA_FP8_TENSOR_CORES", "0|1",
     "CUDA: FP8 weights with a scale a row run steps past the GEMV as W8A8 on FP8 tensor cores (default 1)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.fp8_tensor_cores = parse_bool("GRETA_CUDA_FP8_TENSOR_CORES", v);
     }},
    {"GRETA_CUDA_W8A8_GEMM_MAX_TOKENS", "0..64",
     "CUDA: FP8 W8A8 steps of up to this many tokens on greta's own kernel, cuBLASLt beyond (default 0: cuBLASLt)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.w8a8_gemm_max_tokens = parse_int("GRETA_CUDA_W8A8_GEMM_MAX_TOKENS", v, 0, 64);
     }},
    {"GRETA_CUDA_MOE_GEMM_MIN_TOKENS", "1..65536",
     "CUDA, mixture of experts: steps of this many tokens or more run the experts as gathered cuBLASLt GEMMs, "
     "uncaptured (default 256)",
     [](BackendOptions& o, const std::string& v) {
       o.cuda.moe_gemm_min_tokens = parse_int("GRETA_CUDA_MOE_GEMM_MIN_TOKENS", v, 1, 65536);
     }},
    {"GRETA_CUDA_STEP_PROFILE", "0|1", "CUDA: per-step device timing of decode steps, printed at exit (default 0)",
     [](BackendOptions& o, const std::string& v) { o.cuda.step_profile = parse_bool("GRETA_CUDA_STEP_PROFILE", v); }},
};

}  // namespace

const std::vector<EnvSwitch>& backend_env_switches() { return kSwitches; }

BackendOptions backend_options_from_env() {
  BackendOptions o;
  for (const EnvSwitch& s : kSwitches) {
    const char* v = std::getenv(s.name);
    if (v && *v) s.apply(o, v);
  }
  return o;
}

std::string backend_env_help() {
  std::string out;
  for (const EnvSwitch& s : kSwitches) out += std::string("  ") + s.name + "=" + s.values + "\n      " + s.doc + "\n";
  return out;
}

}  // namespace greta
