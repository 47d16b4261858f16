// Host data -> device through pinned memory, asynchronously (CudaBackend's per-step uploads:
// token ids, gather rows, the step plan).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

// The pinned buffer is reused
// only after the previous copy out of it has finished (event), the device buffer is reused
// in stream order.
class Staging {
 public:
  ~Staging() {
    if (event_) cudaEventDestroy(event_);
    cudaFreeHost(host_);
    cudaFree(dev_);
  }
  void* put(const void* src, size_t bytes, cudaStream_t s) {
    if (!event_) GRETA_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    GRETA_CUDA_CHECK(cudaEventSynchronize(event_));
    if (bytes > cap_) {
      GRETA_CUDA_CHECK(cudaStreamSynchronize(s));  // kernels may still read the old device buffer
      cudaFreeHost(host_);
      cudaFree(dev_);
      host_ = dev_ = nullptr;
      cap_ = std::max<size_t>(bytes, 4096) * 2;
      GRETA_CUDA_CHECK(cudaMallocHost(&host_, cap_));
      GRETA_CUDA_CHECK(cudaMalloc(&dev_, cap_));
    }
    if (bytes) {
      std::memcpy(host_, src, bytes);
      GRETA_CUDA_CHECK(cudaMemcpyAsync(dev_, host_, bytes, cudaMemcpyHostToDevice, s));
    }
    GRETA_CUDA_CHECK(cudaEventRecord(event_, s));
    return dev_;
  }

 private:
  void* host_ = nullptr;
  void* dev_ = nullptr;
  size_t cap_ = 0;
  cudaEvent_t event_ = nullptr;
};

}  // namespace greta::cuda
