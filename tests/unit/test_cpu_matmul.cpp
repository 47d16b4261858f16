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
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"
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
  for (DType dt : {DType::Q4_1, DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q5_1})
    for (int64_t n : {1, 3, 37})
      for (int64_t k : {32, 96, 576, 1536})
        for (int64_t m : {1, 7, 577}) {
          if (n * k * m > 37 * 576 * 577) continue;  // keep the double reference quick
          check(dt, n, k, m, m == 7);
        }
}

TEST(CpuMatmul, KQuants) {
  for (DType dt : {DType::Q4_K, DType::Q5_K, DType::Q6_K})
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
  // Its Q4_K_M / Q5_K_M files: 576-wide rows fall back to Q5_0 / Q5_1, 1536-wide ones are K-quants.
  check(DType::Q5_0, 5, 576, 1536, false);
  check(DType::Q5_1, 1, 576, 192, true);
  check(DType::Q5_K, 5, 1536, 576, false);
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
  for (DType dt :
       {DType::Q4_1, DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
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

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
namespace {

// llama.cpp's AVX2 vec_dot of one weight row in a 32-value format against int8 activations
// (ggml_vec_dot_q8_0_q8_0 / q4_0_q8_0 / q5_0_q8_0 / q4_1_q8_1 / q5_1_q8_1), written out in
// scalar: per block, 8 lanes each hold the integer sum of 4 adjacent products, converted to
// float and fused-multiply-added with fp32(d_w) * fp32(d_x); the end is the fixed-order sum of
// the 8 lanes plus, for the formats with an offset, the sum of m_w * s_x in block order. That
// last product may be fused into the sum or not, by the compiler's choice in either engine:
// both roundings are returned.
std::pair<float, float> ggml_avx2_dot(DType dt, const uint8_t* w, const int8_t* xq, const cpu::ActBlock* xb,
                                      int64_t k) {
  const size_t bb = block_bytes(dt);
  const bool offset = dt == DType::Q4_1 || dt == DType::Q5_1;
  float acc[8] = {}, summs_mul = 0.0f, summs_fma = 0.0f;
  for (int64_t b = 0; b < k / 32; ++b) {
    const uint8_t* blk = w + size_t(b) * bb;
    uint16_t d, m = 0;
    std::memcpy(&d, blk, 2);
    if (offset) std::memcpy(&m, blk + 2, 2);
    int q[32];
    for (int l = 0; l < 32; ++l) {
      const uint8_t* qs = blk + (dt == DType::Q4_0 ? 2 : dt == DType::Q4_1 ? 4 : dt == DType::Q5_0 ? 6 : 8);
      const int nib = l < 16 ? (qs[l] & 15) : (qs[l - 16] >> 4);
      switch (dt) {
        case DType::Q8_0: q[l] = int8_t(blk[2 + l]); break;
        case DType::Q4_0: q[l] = nib - 8; break;
        case DType::Q4_1: q[l] = nib; break;
        case DType::Q5_0: q[l] = q5_quant(qs, blk + 2, l) - 16; break;
        default: q[l] = q5_quant(qs, blk + 4, l); break;
      }
    }
    const float dd = fp16_to_float(d) * xb[b].d;
    for (int lane = 0; lane < 8; ++lane) {
      int32_t s = 0;
      for (int e = 4 * lane; e < 4 * lane + 4; ++e) s += q[e] * xq[32 * b + e];
      acc[lane] = std::fma(float(s), dd, acc[lane]);
    }
    volatile float ms = fp16_to_float(m) * xb[b].s;  // volatile: rounded on its own, never fused
    summs_mul += ms;
    summs_fma = std::fma(fp16_to_float(m), xb[b].s, summs_fma);
  }
  float r[4];
  for (int i = 0; i < 4; ++i) r[i] = acc[i] + acc[i + 4];
  const float lanes = (r[0] + r[2]) + (r[1] + r[3]);
  return {lanes + summs_mul, lanes + summs_fma};
}

}  // namespace

// The fast path rounds as llama.cpp does for the 32-value formats, so both engines give the
// same logits: every output equals the lane model above exactly, through every tile shape.
TEST(CpuMatmul, SmallBlockFormatsRoundAsGgml) {
  for (DType dt : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    const int64_t n = 6, k = 576, m = 23;  // 4-token and 1-token tiles, 4/2/1-row tiles
    const HostWeight w = make_weight(dt, m, k, 17);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n * k)), out(static_cast<size_t>(n * m));
    for (auto& v : x) v = nd(rng);
    ThreadPool pool(2);
    cpu::Scratch scratch;
    const cpu::WeightView wv{dt, w.bytes.data(), m, k, row_bytes(dt, k)};
    cpu::matmul(x.data(), n, wv, nullptr, out.data(), scratch, pool);
    std::vector<int8_t> xq(static_cast<size_t>(k));
    std::vector<cpu::ActBlock> xb(static_cast<size_t>(k / 32));
    for (int64_t i = 0; i < n; ++i) {
      cpu::quantize_act_row(x.data() + i * k, k, xq.data(), xb.data());
      for (int64_t r = 0; r < m; ++r) {
        const auto [a, b] = ggml_avx2_dot(dt, wv.data + r * wv.row_stride, xq.data(), xb.data(), k);
        const float got = out[size_t(i * m + r)];
        ASSERT_TRUE(got == a || got == b) << "out[" << i << "," << r << "] = " << got << ", ggml " << a << " / " << b;
      }
    }
  }
}
#endif
