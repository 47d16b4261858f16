// Decode GEMV kernels (gemv_quant_tiles.cuh) of GGUF's 32-value block formats with 4/5-bit values.
#include "backend/cuda/gemv_quant_tiles.cuh"

namespace greta::cuda {

template <>
void launch_quant_format<DType::Q4_0>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q4_0>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::Q4_1>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q4_1>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::Q5_0>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q5_0>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::Q5_1>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q5_1>(a, eps, norm, epi, s);
}

}  // namespace greta::cuda
