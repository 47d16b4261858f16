#include "backend/cuda/device_workspace.h"

namespace greta::cuda {

void DeviceWorkspace::reserve_bytes(Region r, size_t bytes) {
  constexpr size_t kAlign = 256;
  if (bytes > size_[r]) {
    before_grow_();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // queued kernels may use the old buffer
    size_[r] = (bytes + kAlign - 1) / kAlign * kAlign;
    size_t total = 0;
    for (int i = 0; i < kRegionCount; ++i) {
      offset_[i] = total;
      total += size_[i];
    }
    buf_.reset(total);
    GRETA_CUDA_CHECK(cudaMemset(buf_.get(), 0, total));
  }
}

}  // namespace greta::cuda
