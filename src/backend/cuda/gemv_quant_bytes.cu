// Decode GEMV kernels (gemv_quant_tiles.cuh) of the formats with a byte a value: Q8_0, F8_B64.
#include "backend/cuda/gemv_quant_tiles.cuh"

namespace greta::cuda {

template <>
void launch_quant_format<DType::Q8_0>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q8_0>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::F8_B64>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::F8_B64>(a, eps, norm, epi, s);
}

}  // namespace greta::cuda
