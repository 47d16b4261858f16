// Fused projections (Backend::upload_fused, matmul_qkv, matmul_silu_mul): on the CPU backend,
// which keeps the parts separate (the Backend defaults), the fused ops must give exactly the
// unfused results -- the llama.cpp parity test and the batch tests rely on CPU numerics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/quant_blocks.h"

namespace greta {
namespace {

// A weight as a model file would hold it: random values stored as `dtype`.
struct HostW {
  std::vector<uint8_t> bytes;
  HostTensor t;
  HostW(DType dtype, std::vector<int64_t> shape, std::mt19937& rng, const char* name) {
    const int64_t cols = shape.back(), rows = shape.size() == 2 ? shape[0] : 1;
    std::uniform_real_distribution<float> d(-0.5f, 0.5f);
    std::vector<float> v(size_t(rows * cols));
    for (float& x : v) x = d(rng);
    const size_t rb = row_bytes(dtype, cols);
    bytes.resize(rb * size_t(rows));
    for (int64_t r = 0; r < rows; ++r) quantize_row(dtype, v.data() + r * cols, bytes.data() + size_t(r) * rb, cols);
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data = bytes.data();
    t.nbytes = bytes.size();
  }
  HostW(const HostW&) = delete;  // t.data points into bytes
};

Tensor random_act(Backend& b, int64_t rows, int64_t cols, std::mt19937& rng) {
  Tensor t = b.alloc(rows, cols);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  auto* p = static_cast<float*>(t.data);
  for (int64_t i = 0; i < rows * cols; ++i) p[i] = d(rng);
  return t;
}

std::vector<float> host(Backend& b, Tensor t) {
  std::vector<float> v(size_t(t.rows * t.cols));
  b.to_host(t, v.data());
  return v;
}

class ModelFused : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_cpu_backend(2);
  std::mt19937 rng{5};
};

TEST_F(ModelFused, QkvEqualsThreeMatmulsBitExact) {
  // Mixed formats as in Q4_K_M files (v in Q6_K), a Qwen2-style bias, and 1 and 5 tokens.
  const int64_t dim = 256, qd = 192, kvd = 64;
  HostW wq(DType::Q4_K, {qd, dim}, rng, "wq"), wk(DType::Q4_K, {kvd, dim}, rng, "wk"),
      wv(DType::Q6_K, {kvd, dim}, rng, "wv");
  HostW bq(DType::F32, {qd}, rng, "bq"), bk(DType::F32, {kvd}, rng, "bk"), bv(DType::F32, {kvd}, rng, "bv");
  auto fused = be->upload_fused(Fusion::QKV, {&wq.t, &wk.t, &wv.t});
  auto fused_b = be->upload_fused(Fusion::QKV, {&bq.t, &bk.t, &bv.t});
  EXPECT_EQ(fused->n_out, qd + 2 * kvd);
  EXPECT_EQ(fused->n_in, dim);
  EXPECT_EQ(fused->nbytes(), wq.bytes.size() + wk.bytes.size() + wv.bytes.size());
  auto uq = be->upload(wq.t), uk = be->upload(wk.t), uv = be->upload(wv.t);
  auto ubq = be->upload(bq.t), ubk = be->upload(bk.t), ubv = be->upload(bv.t);
  for (int64_t n : {1, 5})
    for (bool bias : {false, true}) {
      Tensor x = random_act(*be, n, dim, rng);
      Tensor q = be->alloc(n, qd), k = be->alloc(n, kvd), v = be->alloc(n, kvd);
      Tensor q2 = be->alloc(n, qd), k2 = be->alloc(n, kvd), v2 = be->alloc(n, kvd);
      be->matmul_qkv(x, *fused, bias ? fused_b.get() : nullptr, q, k, v);
      be->matmul(x, *uq, bias ? ubq.get() : nullptr, q2);
      be->matmul(x, *uk, bias ? ubk.get() : nullptr, k2);
      be->matmul(x, *uv, bias ? ubv.get() : nullptr, v2);
      const std::string what = "n=" + std::to_string(n) + (bias ? " +bias" : "");
      EXPECT_EQ(host(*be, q), host(*be, q2)) << what;
      EXPECT_EQ(host(*be, k), host(*be, k2)) << what;
      EXPECT_EQ(host(*be, v), host(*be, v2)) << what;
      if (bias) {  // the bias really is applied
        Tensor t = be->alloc(n, qd);
        be->matmul(x, *uq, nullptr, t);
        EXPECT_NE(host(*be, q), host(*be, t)) << what;
        be->free(t);
      }
      for (Tensor* t : {&x, &q, &k, &v, &q2, &k2, &v2}) be->free(*t);
    }
}

TEST_F(ModelFused, SiluMulEqualsUnfusedBitExact) {
  const int64_t dim = 128, ffn = 96;
  HostW wg(DType::Q4_1, {ffn, dim}, rng, "gate"), wu(DType::Q8_0, {ffn, dim}, rng, "up");
  auto fused = be->upload_fused(Fusion::GateUp, {&wg.t, &wu.t});
  EXPECT_EQ(fused->n_out, 2 * ffn);
  auto ug = be->upload(wg.t), uu = be->upload(wu.t);
  for (int64_t n : {1, 3, 9}) {
    Tensor x = random_act(*be, n, dim, rng);
    Tensor out = be->alloc(n, ffn), tmp = be->alloc(n, ffn), g = be->alloc(n, ffn), u = be->alloc(n, ffn);
    be->matmul_silu_mul(x, *fused, out, tmp);
    be->matmul(x, *ug, nullptr, g);
    be->matmul(x, *uu, nullptr, u);
    be->silu_mul(g, u, g);
    const auto a = host(*be, out), b = host(*be, g);
    EXPECT_EQ(a, b) << "n=" << n;
    // silu(g)*u is not g or u: the op did the SwiGLU, not a copy of one projection.
    be->matmul(x, *ug, nullptr, u);
    EXPECT_NE(a, host(*be, u)) << "n=" << n;
    for (Tensor* t : {&x, &out, &tmp, &g, &u}) be->free(*t);
  }
}

TEST_F(ModelFused, MismatchedPartsAndForeignWeightsThrow) {
  HostW a(DType::F32, {8, 32}, rng, "a"), b(DType::F32, {8, 64}, rng, "b"), c(DType::F32, {8, 32}, rng, "c");
  EXPECT_THROW(be->upload_fused(Fusion::QKV, {&a.t, &b.t, &c.t}), Error);
  auto plain = be->upload(a.t);
  Tensor x = be->alloc(1, 32), o = be->alloc(1, 8), t = be->alloc(1, 8);
  EXPECT_THROW(be->matmul_qkv(x, *plain, nullptr, o, o, o), Error);
  EXPECT_THROW(be->matmul_silu_mul(x, *plain, o, t), Error);
  auto two = be->upload_fused(Fusion::GateUp, {&a.t, &c.t});
  EXPECT_THROW(be->matmul_qkv(x, *two, nullptr, o, o, o), Error);  // two parts, not three
  for (Tensor* p : {&x, &o, &t}) be->free(*p);
}

}  // namespace
}  // namespace greta
