// Shared helpers for the GPU op tests: every CUDA op runs next to the CPU backend (the
// reference) on the same random inputs, and the relative error ||gpu - cpu|| / ||cpu|| is
// printed ("rel_err ...") and bounded per dtype.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "core/host_tensor.h"
#include "core/quant_blocks.h"

namespace greta::gputest {

// bf16 activations + fp32 accumulation: a few 1e-3 typical; this is the per-dtype bound.
constexpr double kBf16Tol = 1e-2;

// Skips (never passes) when there is no GPU, saying why.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount: " << (e == cudaSuccess ? "0 devices" : cudaGetErrorString(e))
                   << "): GPU op tests need a GPU";
    gpu = make_cuda_backend();
    cpu = make_cpu_backend({.n_threads = 0});
  }
  std::unique_ptr<Backend> gpu, cpu;
};

inline std::vector<float> random_values(size_t n, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  // Rounded to bf16 so both backends start from identical inputs.
  for (auto& x : v) x = bf16_to_float(float_to_bf16(d(rng)));
  return v;
}

// Weights as a model file holds them: not rounded to bf16, so block scales are arbitrary fp16
// values (rounded bf16 inputs make every scale exact in bf16, hiding scale rounding).
inline std::vector<float> random_floats(size_t n, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A tensor on `b` holding v (host floats): the CPU backend's memory is host f32, the CUDA
// backend's is device bf16.
inline Tensor make_tensor(Backend& b, int64_t rows, int64_t cols, const std::vector<float>& v) {
  Tensor t = b.alloc(rows, cols);
  if (b.act_dtype() == DType::F32) {
    std::memcpy(t.data, v.data(), v.size() * 4);
  } else {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_bf16(v[i]);
    EXPECT_EQ(cudaMemcpy(t.data, h.data(), h.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  }
  return t;
}

// Fills a GPU tensor with NaN bf16 so unwritten outputs cannot pass.
inline void poison(Tensor t) { EXPECT_EQ(cudaMemset(t.data, 0xff, size_t(t.rows * t.cols) * 2), cudaSuccess); }

inline std::vector<float> read(Backend& b, Tensor t) {
  std::vector<float> v(size_t(t.rows * t.cols));
  b.to_host(t, v.data());
  return v;
}

// ||a - ref|| / ||ref||; infinity if any value is not finite.
inline double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  if (a.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    const double d = double(a[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline void report(const std::string& what, double err, double tol) {
  std::printf("rel_err %-48s %.3e (bound %.0e)\n", what.c_str(), err, tol);
  EXPECT_LE(err, tol) << what;
}

// A weight as a model file would hold it: values quantized/converted to `dtype`.
struct HostWeight {
  std::vector<uint8_t> bytes;
  HostTensor t;
  HostWeight(DType dtype, std::vector<int64_t> shape, const std::vector<float>& v) {
    const int64_t cols = shape.back();
    const int64_t rows = int64_t(v.size()) / cols;
    const size_t rb = row_bytes(dtype, cols);
    bytes.resize(rb * size_t(rows));
    for (int64_t r = 0; r < rows; ++r) quantize_row(dtype, v.data() + r * cols, bytes.data() + size_t(r) * rb, cols);
    t.name = "test." + std::string(dtype_name(dtype));
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data = bytes.data();
    t.nbytes = bytes.size();
  }
  HostWeight(const HostWeight&) = delete;  // t.data points into bytes
  // The values a backend should see: the stored format decoded to float.
  std::vector<float> decoded() const {
    const int64_t cols = t.cols(), rows = t.rows();
    std::vector<float> f(size_t(rows * cols));
    const size_t rb = row_bytes(t.dtype, cols);
    for (int64_t r = 0; r < rows; ++r)
      dequantize_row(t.dtype, bytes.data() + size_t(r) * rb, f.data() + r * cols, cols);
    return f;
  }
};

}  // namespace greta::gputest
