// What CudaBackend hands out: weights and KV storage in device memory. Each keeps a weak hook
// to its backend's flush, so launches recorded but not yet run (a step that wanted no logits)
// run before the memory they may read is freed.
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {

using FlushHook = std::weak_ptr<std::function<void()>>;
inline void run_flush_hook(const FlushHook& h) {
  if (auto f = h.lock()) {
    try {
      (*f)();
    } catch (const Error&) {  // called from destructors: nothing to report to
    }
  }
}

class CudaWeight final : public Weight {
 public:
  ~CudaWeight() override {
    run_flush_hook(flush);
    cudaFree(data);
    cudaFree(row_scale);
  }
  void* data = nullptr;  // bf16 [n_out, n_in] (2-D) or f32 [1, n_in] (1-D)
  // F8_B64 whose every row has one scale (per-tensor and per-channel FP8): those scales, f32
  // [n_out], for the FP8 tensor-core GEMM; null otherwise.
  float* row_scale = nullptr;
  FlushHook flush;
};

class CudaKV final : public KVStorage {
 public:
  ~CudaKV() override {
    run_flush_hook(flush);
    cudaFree(mem);
  }
  void* mem = nullptr;
  std::vector<KVLayerDev> layers;
  FlushHook flush;
};

}  // namespace greta::cuda
