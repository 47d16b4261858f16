// How the batched GEMMs (gemm_packed.cu, gemm_w8a8.cu, gemm_int8.cu) are cut into blocks, and
// how they split k over blocks when their row and token tiles alone would leave the GPU short of
// blocks.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace greta::cuda {

// Token tiles of tile_tokens, row tiles of 16 * (warps a block) * slabs rows (a warp owns `slabs`
// 16-row slabs), and k split over `splits` blocks of chunks_per_split chunks each (each GEMM's
// own chunk size). A plain value compared by its bytes (a step records its launches:
// step_graph.h), hence no padding.
struct TiledGemmPlan {
  int64_t token_tiles = 0;
  int64_t row_tiles = 0;
  int64_t chunks_per_split = 0;
  int32_t tile_tokens = 0;
  int32_t splits = 1;
  int32_t slabs = 1;
  int32_t unused_ = 0;  // keeps the struct free of tail padding
};

// The split-K scratch of a plan whose blocks have `warps` warps: each part's sums in mma C order
// (floats), and a counter of arrivals a tile (zero between launches).
inline size_t tiled_gemm_scratch_floats(const TiledGemmPlan& p, int warps) {
  return p.splits > 1 ? size_t(p.row_tiles * p.token_tiles * p.splits) * size_t(warps) * size_t(p.slabs) *
                            size_t(p.tile_tokens / 8) * 4 * 32
                      : 0;
}
inline size_t tiled_gemm_counters(const TiledGemmPlan& p) {
  return p.splits > 1 ? size_t(p.row_tiles * p.token_tiles) : 0;
}

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
