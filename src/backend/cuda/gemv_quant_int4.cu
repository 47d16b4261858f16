// Decode GEMV kernels (gemv_quant_tiles.cuh) of the AWQ / GPTQ int4 formats, by group size.
#include "backend/cuda/gemv_quant_tiles.cuh"

namespace greta::cuda {

template <>
void launch_quant_format<DType::I4_G32>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::I4_G32>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::I4_G64>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::I4_G64>(a, eps, norm, epi, s);
}
template <>
void launch_quant_format<DType::I4_G128>(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  launch_token_tiles<DType::I4_G128>(a, eps, norm, epi, s);
}

}  // namespace greta::cuda
