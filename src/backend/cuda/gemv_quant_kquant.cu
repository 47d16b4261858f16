// Decode GEMV kernels (gemv_quant_tiles.cuh) of GGUF's 256-value super-block formats (K-quants).
#include "backend/cuda/gemv_quant_tiles.cuh"

namespace greta::cuda {

template <>
void launch_quant_format<DType::Q4_K>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q4_K>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::Q5_K>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q5_K>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::Q6_K>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::Q6_K>(a, eps, norm, epi, s);
}

}  // namespace greta::cuda
