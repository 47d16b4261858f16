// A step's metadata for the CUDA kernels: the StepPlan's arrays plus the attention work split
// (sequences with at most decode_max_new new tokens go to the split-K decode kernel, one work
// item per token; the others to the tiled prefill kernel, one item per sequence), packed into
// one int32 buffer so a step needs a single host-to-device copy.
//
// Packed order: positions | token_seq | slot | block_begin | seq_len | decode | prefill |
// block_ids. The block tables go last: they grow as sequences do, and every other array then
// keeps its address from step to step (launches that read them stay identical, which lets
// step graphs replay).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_ops.h"
#include "runtime/batch.h"

namespace greta::cuda {

struct PackedStep {
  std::array<size_t, 8> off{};            // offsets in the packed buffer, in the order above
  DevStep shape;                          // counts filled, pointers null (bind_step sets them)
  int32_t max_slot = -1, max_block = -1;  // for the backend's bounds checks against the cache
};

// Fills `packed` (cleared first). The longest decode context is rounded up to ctx_bucket so
// a sequence's steps launch identically for ctx_bucket positions at a time. Throws
// greta::Error on an inconsistent plan.
PackedStep pack_step(const StepPlan& p, int decode_max_new, int ctx_bucket, std::vector<int32_t>& packed);
// The device view of a packed buffer uploaded to `dev`.
DevStep bind_step(const PackedStep& ps, const int32_t* dev);

}  // namespace greta::cuda
