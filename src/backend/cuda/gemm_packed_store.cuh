// The end of a batched packed GEMM block (gemm_packed.cu, and the staged-weights experiment in
// bench/), whose lanes hold their sums in mma C order: acc[r][i] is slab r (16 rows from row0 +
// 16 r) by token tile i (8 tokens from tok0 + 8 i), c0, c1 row g, tokens 2t, 2t + 1; c2, c3 row
// g + 8. With k split over gridDim.z blocks, each block publishes its part and the last of the
// tile to arrive adds the parts in part order (so results do not depend on timing); then the
// sums go to out, rounded to bf16 first and added to out when accumulating, as the GEMV's
// residual epilogue does.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/gemm_packed.h"
#include "backend/cuda/last_block.cuh"

namespace greta::cuda {

// WARPS warps a block; tile = blockIdx.y, part = blockIdx.z. Args: PackedGemmArgs or
// Int8GemmArgs (their out, n, m, accumulate, scratch and counters).
template <int WARPS, int RS, int NT, class Args>
__device__ __forceinline__ void packed_gemm_store(const Args& p, float (&acc)[RS][NT][4], int tok0, int64_t row0) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t tile = blockIdx.y;
  const int part = int(blockIdx.z);
  if (gridDim.z > 1) {
    constexpr int kPart = WARPS * RS * NT * 4 * 32;  // floats a block's part
    const int64_t slot = int64_t(tile) * gridDim.x + blockIdx.x;
    float* parts = p.scratch + slot * gridDim.z * kPart;
    auto at = [&](int r, int i, int j) { return (((warp * RS + r) * NT + i) * 4 + j) * 32 + lane; };
#pragma unroll
    for (int r = 0; r < RS; ++r)
#pragma unroll
      for (int i = 0; i < NT; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) parts[part * kPart + at(r, i, j)] = acc[r][i][j];
    if (!last_to_arrive(p.counters + slot, int(gridDim.z))) return;
    // Part by part, all of a part's loads in flight together (item by item, each load would
    // wait for the one before: measured in the W8A8 GEMM, docs/notes/fp8-gemm.md). The own part
    // is read back too, so acc is dead here: with acc, the parts and the sums live, the int8
    // GEMM's epilogue took more registers than its loop.
    float total[RS][NT][4] = {};
    for (int q = 0; q < int(gridDim.z); ++q) {
      float v[RS][NT][4];
#pragma unroll
      for (int r = 0; r < RS; ++r)
#pragma unroll
        for (int i = 0; i < NT; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) v[r][i][j] = __ldcg(parts + q * kPart + at(r, i, j));
#pragma unroll
      for (int r = 0; r < RS; ++r)
#pragma unroll
        for (int i = 0; i < NT; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) total[r][i][j] += v[r][i][j];
    }
#pragma unroll
    for (int r = 0; r < RS; ++r)
#pragma unroll
      for (int i = 0; i < NT; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[r][i][j] = total[r][i][j];
  }
#pragma unroll
  for (int r = 0; r < RS; ++r)
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int tok = tok0 + 8 * i + 2 * t + (j & 1);
        const int64_t row = row0 + 16 * r + g + 8 * (j >> 1);
        if (tok < p.n && row < p.m) {
          bf16* o = p.out + int64_t(tok) * p.m + row;
          float v = __bfloat162float(__float2bfloat16_rn(acc[r][i][j]));
          if (p.accumulate) v += __bfloat162float(*o);
          *o = __float2bfloat16_rn(v);
        }
      }
}

}  // namespace greta::cuda
