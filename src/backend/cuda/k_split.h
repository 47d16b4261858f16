// How the batched GEMMs (gemm_packed.cu, gemm_w8a8.cu) split k over blocks when their row and
// token tiles alone would leave the GPU short of blocks.
#pragma once
#include <algorithm>
#include <cstdint>

namespace greta::cuda {

struct KSplit {
  int64_t chunks_per_split = 0;
  int32_t splits = 1;
};

// k of `chunks` chunks over about `blocks_wanted` blocks in all, `tiles` of them without a split,
// each part at least `min_chunks` long (shorter ones are mostly their ramp), at most 64 parts, none
// empty.
inline KSplit split_k(int64_t chunks, int64_t tiles, int64_t blocks_wanted, int64_t min_chunks) {
  KSplit s;
  const int64_t want = (blocks_wanted + tiles - 1) / std::max<int64_t>(tiles, 1);
  s.splits = int32_t(std::clamp<int64_t>(std::min(want, chunks / std::max<int64_t>(min_chunks, 1)), 1, 64));
  s.chunks_per_split = (chunks + s.splits - 1) / s.splits;
  s.splits = int32_t((chunks + s.chunks_per_split - 1) / s.chunks_per_split);
  return s;
}

}  // namespace greta::cuda
