// Run-time switches of the CUDA backend, read from the environment once per backend. They
// exist for A/B measurements (bench/NOTES.md) and debugging; the defaults are the measured best.
#include "backend/cuda/cuda_options.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {

namespace {
// Switches that are on by default: only the value "0" turns them off.
bool on_unless_zero(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::string(v) == "0");
}
}  // namespace

// GRETA_CUDA_FUSION: how much of the decode step goes into the GEMVs (for A/B runs; the
// results differ only by rounding). 0: none (every op its own kernel); 1: q/k/v in one GEMV
// launch, gate+up+SiLU in one, residual adds in the o and down GEMVs' epilogues; 2: also the
// RMSNorm inside the GEMVs that consume it; 3 (default): the RMSNorm split between the GEMV
// that produces its input (x * weight and sums of squares in the residual-add epilogue) and
// the one that consumes it (1/rms on its sums), no norm kernel and no norm work in the loop.
// Measured on an H100, Llama-2-7B (bench/NOTES.md): 3 vs 1 +1.2% at batch 1, +1.9% at batch 8.
int fusion_from_env() {
  const char* v = std::getenv("GRETA_CUDA_FUSION");
  if (!v || !*v) return 3;
  const int f = std::atoi(v);
  return f < 0 ? 0 : f > 3 ? 3 : f;
}

// GRETA_CUDA_GEMV_MAX_TOKENS (1..32, default 16): steps with more tokens use cuBLASLt for
// their matmuls, fewer the streaming GEMV. Measured on an H200 (bench/NOTES.md): the GEMV
// with its fusions wins the whole step at 16 tokens (+4%), cuBLASLt at 32 (+17%): beyond 2
// token tiles the GEMV re-reads x from L2 more than it reads weights.
constexpr int kDefaultGemvMaxTokens = 16;
int gemv_max_tokens_from_env() {
  const char* v = std::getenv("GRETA_CUDA_GEMV_MAX_TOKENS");
  if (!v || !*v) return kDefaultGemvMaxTokens;
  return std::clamp(std::atoi(v), 1, cuda::kGemvMaxTokens);
}

bool split_k_from_env() { return on_unless_zero("GRETA_CUDA_SPLITK"); }

bool gemv_pipe_from_env() { return on_unless_zero("GRETA_CUDA_GEMV_PIPE"); }

bool prefill_tc_from_env() { return on_unless_zero("GRETA_CUDA_PREFILL_TC"); }

bool graphs_from_env() { return on_unless_zero("GRETA_CUDA_GRAPHS"); }

bool attn_last_merge_from_env() { return on_unless_zero("GRETA_CUDA_ATTN_LAST_MERGE"); }

// GRETA_CUDA_SKIP: comma-separated kernel classes left out (leave-one-out timing, bench/NOTES.md).
int skip_from_env() {
  const char* v = std::getenv("GRETA_CUDA_SKIP");
  const std::string s = v ? v : "";
  return (s.find("norm") != std::string::npos ? kSkipNorm : 0) | (s.find("attn") != std::string::npos ? kSkipAttention : 0);
}

}  // namespace greta::cuda
