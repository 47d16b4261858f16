// Causal prefill attention on tensor cores: the production shape of the kernel in
// attention_prefill_tc.cuh (8 warps = 128 query rows a block, 64-key tiles two stages deep: the
// fastest shape measured, docs/notes/attention.md).
#include <string>

#include "backend/cuda/attention_prefill_tc.cuh"
#include "backend/cuda/cuda_check.h"

namespace greta::cuda {
namespace {

constexpr int kWarps = 8, kStages = 2;

template <int HD>
void allow_tc_smem() {  // past the 48 KB default
  GRETA_CUDA_CHECK(cudaFuncSetAttribute(prefill_tc::prefill_tc_kernel<HD, kWarps, kStages>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(prefill_tc::TcShape<HD, kWarps, kStages>::kBytes)));
}

template <int HD>
void launch_tc(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
               float softcap, int window, cudaStream_t s) {
  prefill_tc::launch<HD, kWarps, kStages>(q, out, st, kv, n_heads, scale, softcap, window, s);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool attention_prefill_tc_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

void attention_prefill_tc_setup() {
  allow_tc_smem<64>();
  allow_tc_smem<128>();
}

void attention_prefill_tc(const bf16* q, bf16* out, const DevStep& st, const KVLayerDev& kv, int n_heads, float scale,
                          float softcap, int window, cudaStream_t s) {
  if (st.n_prefill == 0) return;
  switch (kv.head_dim) {
    case 64: launch_tc<64>(q, out, st, kv, n_heads, scale, softcap, window, s); break;
    case 128: launch_tc<128>(q, out, st, kv, n_heads, scale, softcap, window, s); break;
    default: throw Error("cuda attention_prefill_tc: head_dim " + std::to_string(kv.head_dim) + " (64 or 128 only)");
  }
}

}  // namespace greta::cuda
