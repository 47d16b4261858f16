// Weight upload for the CUDA backend: raw bytes of a 2-D weight in any supported format (plain
// or quantized blocks) go to the device in chunks of whole rows through one reused device buffer
// and are converted to bf16 or repacked into the packed planes there, so a 7B model never needs
// a second full-size copy in memory.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/cuda_ops.h"
#include "core/dtype.h"

namespace greta::cuda {

class WeightUploader {
 public:
  WeightUploader() = default;
  ~WeightUploader();
  WeightUploader(const WeightUploader&) = delete;
  WeightUploader& operator=(const WeightUploader&) = delete;

  // src: rows x row_bytes host bytes of type t (cols values per row) -> dst [rows, cols] bf16.
  // Asynchronous on s; the caller synchronizes before src may go away.
  void convert(DType t, const uint8_t* src, size_t row_bytes, int64_t rows, int64_t cols, bf16* dst, cudaStream_t s);
  // The same rows kept in their format t (packed_on_device), repacked into the planes at dst
  // (quant_planes(t, rows, cols).total bytes).
  void repack(DType t, const uint8_t* src, size_t row_bytes, int64_t rows, int64_t cols, void* dst, cudaStream_t s);

 private:
  // Copies the rows in chunks through buf_ and calls each(r0, nr) once a chunk is on the device.
  template <class F>
  void in_chunks(const uint8_t* src, size_t row_bytes, int64_t rows, cudaStream_t s, F each);

  void* buf_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace greta::cuda
