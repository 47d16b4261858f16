// The CUDA backend: bf16 activations, weights converted to bf16 at upload, paged bf16 KV
// cache, decode GEMV on tensor cores, cuBLASLt for many-token matmuls, split-K decode
// attention. Built only when CUDA is on (GRETA_HAS_CUDA).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace greta {

// True when the CUDA runtime loads and reports at least one device.
bool cuda_device_present();
// Throws greta::Error if the device does not exist or cannot be initialised.
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace greta
