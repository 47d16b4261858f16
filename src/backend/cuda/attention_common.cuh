// Helpers shared by the paged attention kernels (decode and prefill).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace greta::cuda {

// Running max starts here instead of -inf so that merging two states that saw no key
// (exp2(m_a - m_b) with both at the start value) gives exp2(0) * 0 instead of NaN.
constexpr float kNoScore = -1e30f;
constexpr float kLog2e = 1.4426950408889634f;

// Physical slot of logical position `pos` of a sequence whose block table starts at `table`.
__device__ __forceinline__ int64_t kv_slot(const int32_t* table, int pos, int block_size) {
  return int64_t(table[pos / block_size]) * block_size + pos % block_size;
}

// Gemma 2's score soft-capping in the kernels' exp2 domain. For a score s = scale q.k log2e and
// cap_log2 = softcap log2e, cap_log2 tanh(s / cap_log2) is softcap tanh(scale q.k / softcap)
// times log2e: the capped natural-log score, as the exp2 softmax needs it. cap_log2 0: no cap.
__device__ __forceinline__ float cap_score(float s, float cap_log2) {
  return cap_log2 > 0.f ? cap_log2 * tanhf(s / cap_log2) : s;
}

// 8 bf16 as floats. v by value, not by reference: from a reference to shared or global memory the
// compiler loads each pair on its own (four 4-byte loads, 4-way bank conflicts at 16-byte lane
// strides) instead of one 16-byte load.
__device__ __forceinline__ void unpack8(const uint4 v, float (&f)[8]) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(p[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

}  // namespace greta::cuda
