// Gemma's elementwise ops on the CPU backend: gelu_mul (GeGLU, tanh-approximated gelu) against
// the scalar formula in double, and against llama.cpp's fp16-table arithmetic exactly; scale.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/dtype.h"
#include "core/error.h"

using namespace greta;

namespace {

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

Tensor upload_act(Backend& be, const std::vector<float>& v, int64_t rows, int64_t cols) {
  Tensor t = be.alloc(rows, cols);
  std::copy(v.begin(), v.end(), static_cast<float*>(t.data));
  return t;
}

std::vector<float> download(Backend& be, Tensor t) {
  std::vector<float> v(size_t(t.rows * t.cols));
  be.to_host(t, v.data());
  return v;
}

// Gate values over gelu's whole shape (far negative, the bend near 0, large positive, the +-10
// edges of llama.cpp's table) and up values of both signs.
void gate_and_up(size_t n, std::vector<float>& g, std::vector<float>& u) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  g.resize(n);
  u.resize(n);
  for (size_t i = 0; i < n; ++i) {
    g[i] = nd(rng);
    u[i] = nd(rng) * 0.5f;
  }
  const float edges[] = {-1e4f, -10.5f, -10.0f, -9.99f, -3.0f, -1e-3f, 0.0f, 1e-3f, 0.5f, 9.99f, 10.0f, 10.5f, 1e4f};
  for (size_t i = 0; i < std::size(edges) && i < n; ++i) g[i] = edges[i];
}

}  // namespace

// gelu_mul is within fp16 rounding of the formula: llama.cpp rounds the gate to fp16 (relative
// 2^-11, moving gelu by at most ~1.13 times that) and gelu's value to fp16 (2^-11 again).
TEST(CpuGeglu, MatchesFormulaWithinFp16Rounding) {
  for (int threads : {1, 2})
    for (int64_t n : {1, 5})
      for (int64_t cols : {13, 2048, 1 << 14}) {  // the last: above the elementwise ops' parallel threshold
        SCOPED_TRACE("threads " + std::to_string(threads) + " rows " + std::to_string(n) + " cols " +
                     std::to_string(cols));
        auto be = make_cpu_backend({.n_threads = threads});
        std::vector<float> g, u;
        gate_and_up(size_t(n * cols), g, u);
        Tensor tg = upload_act(*be, g, n, cols), tu = upload_act(*be, u, n, cols), to = be->alloc(n, cols);
        be->gelu_mul(tg, tu, to);
        const auto out = download(*be, to);
        int bad = 0;
        for (size_t i = 0; i < g.size(); ++i) {
          const double want = gelu_tanh(g[i]) * u[i];
          const double tol = 2.5 * std::ldexp(1.0, -11) * (std::fabs(g[i]) + std::fabs(gelu_tanh(g[i]))) *
                             std::fabs(u[i]);
          if (!(std::fabs(out[i] - want) <= tol + 1e-30) && bad++ < 5)
            ADD_FAILURE() << "gelu(" << g[i] << ") * " << u[i] << " = " << out[i] << ", formula " << want;
        }
        EXPECT_EQ(bad, 0);
        be->gelu_mul(tg, tu, tg);  // out aliasing gate is allowed
        EXPECT_EQ(download(*be, tg), out);
        be->free(tg);
        be->free(tu);
        be->free(to);
      }
}

// Bit for bit what ggml_vec_geglu_f32 computes (GGML_GELU_FP16): 0 at or below -10, gate * up at
// or above 10, else fp16(gelu(fp16(gate))) * up with gelu evaluated in float.
TEST(CpuGeglu, MatchesLlamaCppTableExactly) {
  auto be = make_cpu_backend({.n_threads = 1});
  std::vector<float> g, u;
  gate_and_up(4096, g, u);
  Tensor tg = upload_act(*be, g, 1, 4096), tu = upload_act(*be, u, 1, 4096);
  be->gelu_mul(tg, tu, tg);
  const auto out = download(*be, tg);
  for (size_t i = 0; i < g.size(); ++i) {
    float want;
    if (g[i] <= -10.0f) {
      want = 0.0f;
    } else if (g[i] >= 10.0f) {
      want = g[i] * u[i];
    } else {
      const float x = fp16_to_float(float_to_fp16(g[i]));
      const float gelu = 0.5f * x *
                         (1.0f + std::tanh(0.79788456080286535587989211986876f * x * (1.0f + 0.044715f * x * x)));
      want = fp16_to_float(float_to_fp16(gelu)) * u[i];
    }
    ASSERT_EQ(out[i], want) << "gate " << g[i] << " up " << u[i];
  }
  be->free(tg);
  be->free(tu);
}

TEST(CpuGeglu, RefusesMismatchedShapes) {
  auto be = make_cpu_backend({.n_threads = 1});
  Tensor a = be->alloc(2, 8), b = be->alloc(2, 9), o = be->alloc(2, 8);
  EXPECT_THROW(be->gelu_mul(a, b, o), Error);
  EXPECT_THROW(be->scale(a, 2.0f, b), Error);
  for (Tensor* t : {&a, &b, &o}) be->free(*t);
}

// Gemma's embedding scale: each value times the factor, in float (as ggml_scale).
TEST(CpuGeglu, Scale) {
  for (int threads : {1, 2}) {
    auto be = make_cpu_backend({.n_threads = threads});
    std::vector<float> x, unused;
    gate_and_up(3 * 20000, x, unused);
    Tensor tx = upload_act(*be, x, 3, 20000), to = be->alloc(3, 20000);
    const float s = std::sqrt(640.0f);
    be->scale(tx, s, to);
    const auto out = download(*be, to);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[i], x[i] * s);
    be->scale(tx, s, tx);  // in place
    EXPECT_EQ(download(*be, tx), out);
    be->free(tx);
    be->free(to);
  }
}
