// Error checking for every CUDA runtime / cuBLASLt call and kernel launch. A failure throws
// greta::Error naming the call, file:line and the driver's message, so a bad launch shows
// up at the op that caused it instead of as garbage logits three layers later.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "core/error.h"

namespace greta::cuda {

[[noreturn]] inline void fail(const std::string& what, const char* file, int line) {
  throw Error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + what);
}
inline void check(cudaError_t e, const char* expr, const char* file, int line) {
  if (e != cudaSuccess)
    fail(std::string(expr) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")", file, line);
}
inline void check(cublasStatus_t s, const char* expr, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) fail(std::string(expr) + ": cuBLAS status " + std::to_string(int(s)), file, line);
}

}  // namespace greta::cuda

#define GRETA_CUDA_CHECK(expr) ::greta::cuda::check((expr), #expr, __FILE__, __LINE__)
// After every <<<...>>>: catches bad launch configurations (and, in debug runs with
// CUDA_LAUNCH_BLOCKING=1, faults inside the kernel).
#define GRETA_CUDA_LAUNCH_CHECK() ::greta::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
