// The CUDA backend: bf16 activations, weights converted to bf16 at upload, paged bf16 KV
// cache, decode GEMV on tensor cores, cuBLASLt for many-token matmuls, split-K decode
// attention. Built only when CUDA is on (GRETA_HAS_CUDA).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_options.h"

namespace greta {

// True when the CUDA runtime loads and reports at least one device.
bool cuda_device_present();
// Throws greta::Error if the device does not exist or cannot be initialised, or an option is
// out of its range.
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& o = {});

// How the backend's recorded steps ran so far: launched directly, captured into a new graph
// (and launched), or replayed from a graph. Throws greta::Error for a non-CUDA backend.
struct CudaGraphStats {
  int64_t eager = 0, captured = 0, replayed = 0;
};
CudaGraphStats cuda_graph_stats(const Backend& b);
// Decode steps the backend ran as one persistent launch (CudaOptions::persistent_decode). Throws
// greta::Error for a non-CUDA backend.
int64_t cuda_persistent_steps(const Backend& b);

// Backend::sample on a CUDA backend that also copies the final distribution the kernel drew
// from (probabilities [rows, vocab], 0 for filtered tokens) to `dist` (host): a test hook.
void cuda_sample_with_distribution(Backend& b, Tensor logits, const std::vector<DeviceSampleParams>& per_row,
                                   int32_t* tokens_out, float* probs_out, float* dist);

}  // namespace greta
