// The CPU backend: the reference every other backend is tested against, and what runs the
// model when there is no GPU.
//
// - Activations are F32. Weights are used in place: upload() keeps a pointer into the
//   HostTensor's bytes (the model file mapping) for every dtype, quantized blocks included.
//   The caller (the model) must keep the MappedFile alive as long as the Weights.
// - Quantized matmuls quantize activations to int8 blocks once per call and use integer
//   SIMD dot products on the GGML blocks (see matmul_quant.cpp).
// - Ops run synchronously on a persistent thread pool; the calling thread takes part.
#pragma once
#include <memory>

#include "backend/backend.h"
#include "backend/backend_options.h"

namespace greta {

// See CpuOptions (backend_options.h) for what each option does.
std::unique_ptr<Backend> make_cpu_backend(const CpuOptions& o = {});

}  // namespace greta
