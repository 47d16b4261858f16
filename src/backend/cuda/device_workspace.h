// The CUDA backend's per-step device scratch, as regions of one allocation: attention partials
// and their arrival counters, split-K partials and counters, the split RMSNorm's sums of
// squares, and the sampling output.
//
// Guarantees
// - A region's address is stable until some region needs more room than it ever had: every
//   region keeps the largest size asked of it, so the layout, and with it every pointer a
//   recorded step (a CUDA graph) holds, changes only on growth.
// - On growth the owner's recorded launches run first (before_grow), the stream drains, and one
//   new buffer replaces the old, zeroed whole: counters that kernels leave at zero start at zero.
// - Sizes are asked for where they are known, by the op that needs the region (the model's
//   shapes are not part of a step plan); in a steady state no step allocates.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <functional>

#include "backend/cuda/device_buffer.h"

namespace greta::cuda {

class DeviceWorkspace {
 public:
  enum Region : int {
    kAttnPartials,   // float: decode attention partial results of every partition
    kAttnArrivals,   // int32: decode attention counters (zero between launches)
    kSplitPartials,  // float: split-K GEMV partial sums
    kSplitCounters,  // int32: split-K arrivals per row tile (zero between launches)
    kNormSums,       // float: the split RMSNorm's per-tile sums of squares
    kSampleOut,      // int32 tokens then float probabilities of a sampled step
    kSampleDist,     // float: the sampled distributions (a test hook)
    kDequant,        // bf16: rows of a packed weight dequantized for a cuBLASLt GEMM
    kFp8Acts,        // uint8: activations quantized to e4m3 for the FP8 GEMM
    kFp8Scales,      // float: their per-token scales
    kInt8Acts,       // bytes: activations quantized to int8 per 32 values for the int8 GEMM (Int8Acts)
    kMoe,            // bytes: a mixture-of-experts step's routing and expert rows (moe_layout)
    kRegionCount
  };

  // before_grow: runs whatever may still use the old buffer (the owner's recorded launches).
  DeviceWorkspace(cudaStream_t s, std::function<void()> before_grow)
      : stream_(s), before_grow_(std::move(before_grow)) {}

  // Makes region r hold at least count T's. Growth moves every region: reserve all the regions
  // an op needs before taking their addresses.
  template <class T>
  void reserve(Region r, size_t count) {
    reserve_bytes(r, count * sizeof(T));
  }
  template <class T>
  T* at(Region r) const {
    return reinterpret_cast<T*>(static_cast<char*>(buf_.get()) + offset_[r]);
  }

 private:
  void reserve_bytes(Region r, size_t bytes);

  cudaStream_t stream_;
  std::function<void()> before_grow_;
  DeviceBuffer buf_;
  std::array<size_t, kRegionCount> size_{}, offset_{};
};

}  // namespace greta::cuda
