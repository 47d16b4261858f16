// One owned device allocation (cudaMalloc / cudaFree), moved never copied.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { cudaFree(p_); }  // a destructor has nobody to report a failure to
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Replaces the allocation with a new one of `bytes` (contents not kept). The caller makes
  // sure no queued work still uses the old one.
  void reset(size_t bytes) {
    GRETA_CUDA_CHECK(cudaFree(p_));
    p_ = nullptr;
    size_ = 0;
    if (bytes) GRETA_CUDA_CHECK(cudaMalloc(&p_, bytes));
    size_ = bytes;
  }
  void* get() const { return p_; }
  size_t size() const { return size_; }

 private:
  void* p_ = nullptr;
  size_t size_ = 0;
};

}  // namespace greta::cuda
