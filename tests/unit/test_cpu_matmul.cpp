// CPU matmul for every weight dtype against a plain double-precision reference
// (out = x @ dequantize(w)^T + bias), on awkward shapes, through the Backend interface.
//
// Error bound. Float weights: float accumulation, |err| <= 1e-5 * sum|x w|.
// Quantized weights: the backend also quantizes x to int8 per 32 values (step amax_b/127,
// so |x err| <= amax_b/254 per element), giving |err| <= sum_b (amax_b/254) sum_i |w_bi|
// plus float rounding. The test checks exactly that bound, so a wrong block layout,
// scale, zero point or row mapping fails it by orders of magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/quant_blocks.h"

using namespace greta;

namespace {

struct HostWeight {
  std::vector<uint8_t> bytes;
  HostTensor t;
  std::vector<float> deq;  // [m, k] what the weight means
};

HostWeight make_weight(DType dt, int64_t m, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  std::uniform_real_distribution<float> off(-0.3f, 0.3f);
  HostWeight w;
  const size_t rb = row_bytes(dt, k);
  w.bytes.resize(rb * size_t(m));
  w.deq.resize(size_t(m * k));
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < m; ++r) {
    const float shift = off(rng);  // rows with a non-zero mean exercise Q4_1/Q4_K mins
    for (auto& v : row) v = nd(rng) + shift;
    quantize_row(dt, row.data(), w.bytes.data() + r * rb, k);
    dequantize_row(dt, w.bytes.data() + r * rb, w.deq.data() + r * k, k);
  }
  w.t.name = std::string("w");  // not = "w": GCC 12 -O3 reports a false -Wrestrict on that assign
  w.t.dtype = dt;
  w.t.shape = {m, k};
  w.t.data = w.bytes.data();
  w.t.nbytes = w.bytes.size();
  return w;
}

std::vector<float> run_matmul(Backend& be, const Weight& w, const Weight* bias, const std::vector<float>& x, int64_t n,
                              int64_t k, int64_t m) {
  Tensor tx = be.alloc(n, k), to = be.alloc(n, m);
  std::copy(x.begin(), x.end(), static_cast<float*>(tx.data));
  be.matmul(tx, w, bias, to);
  std::vector<float> out(static_cast<size_t>(n * m));
  be.to_host(to, out.data());
  be.free(tx);
  be.free(to);
  return out;
}

void check(DType dt, int64_t n, int64_t k, int64_t m, bool with_bias) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
               " m=" + std::to_string(m) + (with_bias ? " +bias" : ""));
  const HostWeight w = make_weight(dt, m, k, uint32_t(n * 131 + k * 7 + m));
  std::mt19937 rng(uint32_t(k + m + n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * k)), bias(static_cast<size_t>(m));
  for (auto& v : x) v = nd(rng);
  for (auto& v : bias) v = nd(rng);
  x[0] = 25.0f;  // an outlier: per-block activation scales must keep the others accurate
  HostTensor bt{"b", DType::F32, {m}, reinterpret_cast<const uint8_t*>(bias.data()), bias.size() * 4};

  auto be1 = make_cpu_backend({.n_threads = 1}), be2 = make_cpu_backend({.n_threads = 2});
  auto w1 = be1->upload(w.t), w2 = be2->upload(w.t);
  auto b1 = be1->upload(bt), b2 = be2->upload(bt);
  const auto out1 = run_matmul(*be1, *w1, with_bias ? b1.get() : nullptr, x, n, k, m);
  const auto out2 = run_matmul(*be2, *w2, with_bias ? b2.get() : nullptr, x, n, k, m);

  const bool quant = is_quantized(dt);
  int bad = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < m; ++r) {
      double ref = with_bias ? bias[size_t(r)] : 0.0, mag = 0.0, qerr = 0.0;
      for (int64_t b = 0; b < k / 32 * 32; b += 32) {
        double amax = 0.0, wabs = 0.0;
        for (int64_t j = b; j < b + 32; ++j) {
          const double xv = x[size_t(i * k + j)], wv = w.deq[size_t(r * k + j)];
          ref += xv * wv;
          mag += std::fabs(xv * wv);
          amax = std::max(amax, std::fabs(xv));
          wabs += std::fabs(wv);
        }
        qerr += amax / 254.0 * wabs;
      }
      for (int64_t j = k / 32 * 32; j < k; ++j) {
        ref += double(x[size_t(i * k + j)]) * w.deq[size_t(r * k + j)];
        mag += std::fabs(double(x[size_t(i * k + j)]) * w.deq[size_t(r * k + j)]);
      }
      const double bound = (quant ? 1.01 * qerr : 0.0) + 1e-5 * (mag + std::fabs(ref)) + 1e-6;
      const float got = out1[size_t(i * m + r)];
      if (!(std::fabs(got - ref) <= bound) && bad++ < 5)
        ADD_FAILURE() << "out[" << i << "," << r << "] = " << got << ", reference " << ref << ", bound " << bound;
      // Threads split rows only; every element is computed by the same arithmetic.
      if (out2[size_t(i * m + r)] != got && bad++ < 5)
        ADD_FAILURE() << "1 vs 2 threads differ at [" << i << "," << r << "]: " << got << " vs "
                      << out2[size_t(i * m + r)];
    }
  EXPECT_EQ(bad, 0);
}

}  // namespace

TEST(CpuMatmul, SmallBlockFormats) {
  for (DType dt : {DType::Q4_1, DType::Q8_0, DType::Q4_0})
    for (int64_t n : {1, 3, 37})
      for (int64_t k : {32, 96, 576, 1536})
        for (int64_t m : {1, 7, 577}) {
          if (n * k * m > 37 * 576 * 577) continue;  // keep the double reference quick
          check(dt, n, k, m, m == 7);
        }
}

TEST(CpuMatmul, KQuants) {
  for (DType dt : {DType::Q4_K, DType::Q6_K})
    for (int64_t n : {1, 3, 37})
      for (int64_t k : {256, 768})
        for (int64_t m : {1, 7, 577}) check(dt, n, k, m, m == 577);
}

TEST(CpuMatmul, FloatFormats) {
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t n : {1, 3, 37})
      for (int64_t k : {32, 96, 577})  // float weights need no block multiple
        for (int64_t m : {1, 7, 577}) check(dt, n, k, m, m == 1);
}

TEST(CpuMatmul, DefaultModelShapes) {
  check(DType::Q4_1, 1, 576, 1536, false);
  check(DType::Q4_1, 5, 1536, 576, false);
  check(DType::Q8_0, 2, 576, 4099, false);  // tied output projection shape (rows trimmed)
}

TEST(CpuMatmul, RejectsMismatchedShapes) {
  const HostWeight w = make_weight(DType::Q4_1, 8, 64, 1);
  auto be = make_cpu_backend({.n_threads = 1});
  auto wt = be->upload(w.t);
  Tensor x = be->alloc(2, 32), out = be->alloc(2, 8);
  EXPECT_THROW(be->matmul(x, *wt, nullptr, out), Error);
  be->free(x);
  be->free(out);
  HostTensor bad = w.t;
  bad.shape = {8, 48};  // not a multiple of the 32-value block
  EXPECT_THROW(be->upload(bad), Error);
  bad.shape = {9, 64};  // more rows than bytes
  EXPECT_THROW(be->upload(bad), Error);
}

TEST(CpuMatmul, ExactModeHasNoActivationQuantizationError) {
  // The reference mode multiplies dequantized weights with float activations: float-rounding
  // error only, far below the int8 activation bound the fast path is held to.
  for (DType dt : {DType::Q4_1, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    const int64_t n = 3, k = 768, m = 37;
    const HostWeight w = make_weight(dt, m, k, 99);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n * k));
    for (auto& v : x) v = nd(rng);
    auto exact = make_cpu_backend({.n_threads = 2, .exact_matmul = true}), fast = make_cpu_backend({.n_threads = 2});
    auto we = exact->upload(w.t), wf = fast->upload(w.t);
    const auto oe = run_matmul(*exact, *we, nullptr, x, n, k, m);
    const auto of = run_matmul(*fast, *wf, nullptr, x, n, k, m);
    double worst_fast = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < m; ++r) {
        double ref = 0.0, mag = 0.0;
        for (int64_t j = 0; j < k; ++j) {
          ref += double(x[size_t(i * k + j)]) * w.deq[size_t(r * k + j)];
          mag += std::fabs(double(x[size_t(i * k + j)]) * w.deq[size_t(r * k + j)]);
        }
        EXPECT_NEAR(oe[size_t(i * m + r)], ref, 1e-6 * mag) << i << "," << r;
        worst_fast = std::max(worst_fast, std::fabs(of[size_t(i * m + r)] - ref) / mag);
      }
    EXPECT_GT(worst_fast, 1e-5) << "the fast path was expected to show int8 activation error";
  }
}
