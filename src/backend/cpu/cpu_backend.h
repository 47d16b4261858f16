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

namespace greta {

// n_threads <= 0: std::thread::hardware_concurrency().
// exact_matmul (also switched on by the environment variable GRETA_CPU_EXACT_MATMUL=1): quantized
// weights are dequantized row by row and multiplied with float activations instead of int8-quantized
// ones. Several times slower; for reference runs where activation quantization error (~1/254 of
// each 32-value block's largest activation) must not enter the comparison.
std::unique_ptr<Backend> make_cpu_backend(int n_threads, bool exact_matmul = false);

}  // namespace greta
