// CPU matmul with the block types of Hugging Face quantized checkpoints (F8_B64, I4_G*) against a
// double-precision dot product of the dequantized weights: these run on float activations, so the
// only error is float summation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/host_tensor.h"
#include "core/quant_blocks.h"
#include "core/thread_pool.h"

using namespace greta;

namespace {

// Random bytes are valid blocks of either family once scales and zeros are set sensibly.
std::vector<uint8_t> random_blocks(DType t, int64_t m, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> w(row_bytes(t, k) * size_t(m));
  for (auto& b : w) b = uint8_t(rng());
  const size_t bb = block_bytes(t);
  std::uniform_real_distribution<float> sc(0.01f, 0.1f);
  for (size_t off = 0; off < w.size(); off += bb) {
    if (t == DType::F8_B64) {
      const float s = sc(rng);
      std::memcpy(&w[off], &s, 4);
      for (size_t i = 4; i < bb; ++i)
        if ((w[off + i] & 0x7f) == 0x7f) w[off + i] = 0x38;  // no NaN codes
    } else {
      const uint16_t d = float_to_fp16(sc(rng));
      std::memcpy(&w[off], &d, 2);
      w[off + 2] = uint8_t(rng() % 17);
    }
  }
  return w;
}

void check(DType t, int64_t n, int64_t k, int64_t m) {
  SCOPED_TRACE(std::string(dtype_name(t)) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
  const std::vector<uint8_t> w = random_blocks(t, m, k, uint32_t(k + m));
  std::mt19937 rng{uint32_t(n)};
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(n * k)), bias(static_cast<size_t>(m)), out(static_cast<size_t>(n * m)),
      deq(static_cast<size_t>(k));
  for (auto& v : x) v = nd(rng);
  for (auto& v : bias) v = nd(rng);
  ThreadPool pool(2);
  cpu::Scratch scratch;
  const cpu::WeightView wv{t, w.data(), m, k, row_bytes(t, k)};
  cpu::matmul(x.data(), n, wv, bias.data(), out.data(), scratch, pool);
  for (int64_t r = 0; r < m; ++r) {
    dequantize_row(t, w.data() + size_t(r) * wv.row_stride, deq.data(), k);
    for (int64_t i = 0; i < n; ++i) {
      double ref = bias[size_t(r)], mag = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        ref += double(x[size_t(i * k + j)]) * deq[size_t(j)];
        mag += std::fabs(double(x[size_t(i * k + j)]) * deq[size_t(j)]);
      }
      ASSERT_NEAR(out[size_t(i * m + r)], ref, 1e-5 * mag + 1e-6) << "row " << r << " token " << i;
    }
  }
}

}  // namespace

TEST(CpuHfQuant, MatmulMatchesDequantizedWeights) {
  for (DType t : {DType::F8_B64, DType::I4_G32, DType::I4_G64, DType::I4_G128})
    for (int64_t n : {1, 2, 3, 9}) {
      check(t, n, 384, 37);
      check(t, n, 640, 40);
      if (block_elems(t) <= 64) check(t, n, 576, 24);  // the default model's hidden size
    }
}
