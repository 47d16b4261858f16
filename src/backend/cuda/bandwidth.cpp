// The card's memory bandwidth as the benchmark protocol defines it (docs/DESIGN.md, "Performance protocol"): a large
// device-to-device copy, bytes read + written per second.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {

double measure_copy_bandwidth_gbs(cudaStream_t s) {
  // 1 GiB device-to-device copy, best of 5 after a warm-up; bytes read + written / time.
  const size_t bytes = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&a, bytes));
  GRETA_CUDA_CHECK(cudaMalloc(&b, bytes));
  GRETA_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, s));
  cudaEvent_t e0, e1;
  GRETA_CUDA_CHECK(cudaEventCreate(&e0));
  GRETA_CUDA_CHECK(cudaEventCreate(&e1));
  float best_ms = 1e30f;
  for (int i = 0; i < 6; ++i) {
    GRETA_CUDA_CHECK(cudaEventRecord(e0, s));
    GRETA_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    GRETA_CUDA_CHECK(cudaEventRecord(e1, s));
    GRETA_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    GRETA_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (i > 0) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  GRETA_CUDA_CHECK(cudaFree(a));
  GRETA_CUDA_CHECK(cudaFree(b));
  return 2.0 * double(bytes) / (double(best_ms) * 1e-3) / 1e9;
}

}  // namespace greta::cuda
