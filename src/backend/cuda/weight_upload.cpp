#include "backend/cuda/weight_upload.h"

#include <algorithm>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

WeightUploader::~WeightUploader() { cudaFree(buf_); }

template <class F>
void WeightUploader::in_chunks(const uint8_t* src, size_t rb, int64_t rows, cudaStream_t s, F each) {
  // Stream order keeps chunk i+1's copy behind chunk i's conversion.
  constexpr size_t kChunk = size_t(64) << 20;
  const int64_t rows_per = std::max<int64_t>(1, int64_t(kChunk / rb));
  const size_t need = rb * size_t(std::min(rows, rows_per));
  if (need > cap_) {
    GRETA_CUDA_CHECK(cudaStreamSynchronize(s));  // earlier conversions may still read the old buffer
    GRETA_CUDA_CHECK(cudaFree(buf_));
    buf_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&buf_, need));
    cap_ = need;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per) {
    const int64_t nr = std::min(rows_per, rows - r0);
    GRETA_CUDA_CHECK(cudaMemcpyAsync(buf_, src + size_t(r0) * rb, size_t(nr) * rb, cudaMemcpyHostToDevice, s));
    each(r0, nr);
  }
}

void WeightUploader::convert(DType t, const uint8_t* src, size_t rb, int64_t rows, int64_t cols, bf16* dst,
                             cudaStream_t s) {
  in_chunks(src, rb, rows, s, [&](int64_t r0, int64_t nr) { convert_to_bf16(t, buf_, dst + r0 * cols, nr * cols, s); });
}

void WeightUploader::repack(DType t, const uint8_t* src, size_t rb, int64_t rows, int64_t cols, void* dst,
                            cudaStream_t s) {
  in_chunks(src, rb, rows, s, [&](int64_t r0, int64_t nr) { repack_quant(t, buf_, rb, nr, r0, rows, cols, dst, s); });
}

}  // namespace greta::cuda
