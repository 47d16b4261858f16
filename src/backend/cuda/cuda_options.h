// Run-time switches of the CUDA backend (environment variables, read at backend creation):
//   GRETA_CUDA_GRAPHS=0            decode steps launch their kernels one by one (no graphs)
//   GRETA_CUDA_FUSION=0|1|2|3      how much of the decode step is fused into the GEMVs (default 3)
//   GRETA_CUDA_GEMV_MAX_TOKENS=N   streaming GEMV up to N tokens per step, cuBLASLt beyond (default 16)
//   GRETA_CUDA_PREFILL_TC=0        prompt attention on CUDA cores (default: tensor cores for head_dim 64/128)
//   GRETA_CUDA_SPLITK=0            no split-K for GEMVs with few row tiles (o and down projections)
//   GRETA_CUDA_GEMV_PIPE=0         decode GEMVs without the pipelined weight stream (gemv.cu)
//   GRETA_CUDA_ATTN_LAST_MERGE=0   decode attention partitions merged by a second kernel (default: by
//                                  the last partition block of each token, attention_decode.cu)
//   GRETA_CUDA_STEP_PROFILE=1      per-step device timing, printed when the backend is destroyed
//   GRETA_CUDA_SKIP=norm,attn      timing experiments only: the RMSNorm kernels and/or the attention
//                                  kernels are not launched, so the output is WRONG (greta bench then
//                                  reports check FAIL); what the step loses without them is their cost
// Results differ between settings only by floating-point rounding (GRETA_CUDA_SKIP aside).
#pragma once

namespace greta::cuda {

int fusion_from_env();
int gemv_max_tokens_from_env();
bool graphs_from_env();
bool prefill_tc_from_env();
bool split_k_from_env();
bool gemv_pipe_from_env();
bool attn_last_merge_from_env();
enum : int { kSkipNorm = 1, kSkipAttention = 2 };
int skip_from_env();  // kSkip* bits

}  // namespace greta::cuda
