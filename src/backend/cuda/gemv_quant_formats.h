// The decode GEMV over packed weights, one entry point per format (gemv_quant_tiles.cuh): each
// is defined in the translation unit of its format family (gemv_quant_*.cu), so the families'
// kernels compile in parallel, and gemv_quant.cu dispatches on the format.
#pragma once
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#include "core/dtype.h"

namespace greta::cuda {

// The entry point gemv_kernel.cuh's launchers call for a packed a.wfmt (gemv_quant.cu).
void launch_quant(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s);

// The GEMV a (a.wfmt == T) with the norm mode and epilogue (gemv_kernel.cuh kNorm*, kEpi*).
template <DType T>
void launch_quant_format(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s);

// clang-format off
template <> void launch_quant_format<DType::Q8_0>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::F8_B64>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q4_0>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q4_1>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q5_0>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q5_1>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q4_K>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q5_K>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::Q6_K>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::I4_G32>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::I4_G64>(const GemvArgs&, float, int, int, cudaStream_t);
template <> void launch_quant_format<DType::I4_G128>(const GemvArgs&, float, int, int, cudaStream_t);
// clang-format on

}  // namespace greta::cuda
