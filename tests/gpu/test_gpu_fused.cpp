// Fused projections on the GPU against the CPU backend (which runs them unfused): matmul_qkv
// (one GEMV writing q, k, v; cuBLASLt + column split for many tokens; with and without the
// Qwen2 bias) and matmul_silu_mul (SwiGLU in the GEMV epilogue; cuBLASLt + interleaved
// silu_mul for many tokens), on awkward shapes, including ones the fused layout cannot take
// (then the backend keeps the parts separate and must still be right).
#include <string>
#include <vector>

#include "core/error.h"
#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

using GpuFused = GpuTest;

std::vector<float> run_qkv(Backend& b, const std::vector<float>& xv, int64_t n, int64_t dim, int64_t qd, int64_t kvd,
                           const Weight& w, const Weight* bias) {
  Tensor x = make_tensor(b, n, dim, xv);
  Tensor q = b.alloc(n, qd), k = b.alloc(n, kvd), v = b.alloc(n, kvd);
  if (b.act_dtype() == DType::BF16)
    for (Tensor t : {q, k, v}) poison(t);
  b.matmul_qkv(x, w, bias, q, k, v);
  std::vector<float> all = read(b, q), kk = read(b, k), vv = read(b, v);
  all.insert(all.end(), kk.begin(), kk.end());
  all.insert(all.end(), vv.begin(), vv.end());
  for (Tensor* t : {&x, &q, &k, &v}) b.free(*t);
  return all;
}

TEST_F(GpuFused, QkvMatchesCpu) {
  std::mt19937 rng(11);
  struct Shape { int64_t dim, qd, kvd; };
  for (Shape s : {Shape{576, 576, 192}, Shape{256, 512, 128}, Shape{100, 64, 32}})  // k=100: not a multiple of 8
    for (DType dt : {DType::BF16, DType::Q4_1}) {
      if (dt == DType::Q4_1 && s.dim % 32 != 0) continue;
      HostWeight wq(dt, {s.qd, s.dim}, random_values(size_t(s.qd * s.dim), 0.5f, rng));
      HostWeight wk(dt, {s.kvd, s.dim}, random_values(size_t(s.kvd * s.dim), 0.5f, rng));
      HostWeight wv(DType::BF16, {s.kvd, s.dim}, random_values(size_t(s.kvd * s.dim), 0.5f, rng));
      HostWeight bq(DType::F32, {s.qd}, random_values(size_t(s.qd), 1.f, rng));
      HostWeight bk(DType::F32, {s.kvd}, random_values(size_t(s.kvd), 1.f, rng));
      HostWeight bv(DType::F32, {s.kvd}, random_values(size_t(s.kvd), 1.f, rng));
      auto wg = gpu->upload_fused(Fusion::QKV, {&wq.t, &wk.t, &wv.t});
      auto wc = cpu->upload_fused(Fusion::QKV, {&wq.t, &wk.t, &wv.t});
      auto bg = gpu->upload_fused(Fusion::QKV, {&bq.t, &bk.t, &bv.t});
      auto bc = cpu->upload_fused(Fusion::QKV, {&bq.t, &bk.t, &bv.t});
      EXPECT_EQ(wg->n_out, s.qd + 2 * s.kvd);
      for (int64_t n : {1, 3, 8, 9, 37})
        for (bool bias : {false, true}) {
          const auto xv = random_values(size_t(n * s.dim), 1.f, rng);
          const auto g = run_qkv(*gpu, xv, n, s.dim, s.qd, s.kvd, *wg, bias ? bg.get() : nullptr);
          const auto c = run_qkv(*cpu, xv, n, s.dim, s.qd, s.kvd, *wc, bias ? bc.get() : nullptr);
          const std::string what = "matmul_qkv n=" + std::to_string(n) + " dim=" + std::to_string(s.dim) + " q=" +
                                   std::to_string(s.qd) + " kv=" + std::to_string(s.kvd) + " " +
                                   std::string(dtype_name(dt)) + (bias ? " +bias" : "");
          // Q4_1 on the CPU multiplies int8-quantized activations: the looser bound of the matmul tests.
          report(what, rel_err(g, c), dt == DType::BF16 ? kBf16Tol : 3e-2);
        }
    }
}

TEST_F(GpuFused, SiluMulMatchesCpu) {
  std::mt19937 rng(12);
  struct Shape { int64_t dim, ffn; };
  // ffn 20 is not a multiple of 8: the CUDA backend keeps gate and up separate.
  for (Shape s : {Shape{576, 1536}, Shape{256, 24}, Shape{100, 40}, Shape{64, 20}}) {
    HostWeight gw(DType::BF16, {s.ffn, s.dim}, random_values(size_t(s.ffn * s.dim), 0.5f, rng));
    HostWeight uw(DType::BF16, {s.ffn, s.dim}, random_values(size_t(s.ffn * s.dim), 0.5f, rng));
    auto wg = gpu->upload_fused(Fusion::GateUp, {&gw.t, &uw.t});
    auto wc = cpu->upload_fused(Fusion::GateUp, {&gw.t, &uw.t});
    for (int64_t n : {1, 2, 8, 9, 37}) {
      const auto xv = random_values(size_t(n * s.dim), 1.f, rng);
      Tensor xg = make_tensor(*gpu, n, s.dim, xv), xc = make_tensor(*cpu, n, s.dim, xv);
      Tensor og = gpu->alloc(n, s.ffn), tg = gpu->alloc(n, s.ffn), oc = cpu->alloc(n, s.ffn), tc = cpu->alloc(n, s.ffn);
      poison(og);
      gpu->matmul_silu_mul(xg, *wg, og, tg);
      cpu->matmul_silu_mul(xc, *wc, oc, tc);
      report("matmul_silu_mul n=" + std::to_string(n) + " dim=" + std::to_string(s.dim) + " ffn=" +
                 std::to_string(s.ffn),
             rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
      gpu->free(xg), gpu->free(og), gpu->free(tg), cpu->free(xc), cpu->free(oc), cpu->free(tc);
    }
  }
}

TEST_F(GpuFused, WrongWeightsThrow) {
  std::mt19937 rng(13);
  HostWeight a(DType::BF16, {16, 64}, random_values(16 * 64, 0.5f, rng));
  HostWeight b(DType::BF16, {16, 32}, random_values(16 * 32, 0.5f, rng));
  EXPECT_THROW(gpu->upload_fused(Fusion::QKV, {&a.t, &b.t, &a.t}), Error);  // n_in differs
  EXPECT_THROW(gpu->upload_fused(Fusion::QKV, {&a.t, &a.t}), Error);        // two parts for QKV
  auto plain = gpu->upload(a.t);
  auto gu = gpu->upload_fused(Fusion::GateUp, {&a.t, &a.t});
  Tensor x = gpu->alloc(1, 64), o = gpu->alloc(1, 16), t = gpu->alloc(1, 16);
  EXPECT_THROW(gpu->matmul_qkv(x, *plain, nullptr, o, o, o), Error);
  EXPECT_THROW(gpu->matmul_qkv(x, *gu, nullptr, o, o, o), Error);
  EXPECT_THROW(gpu->matmul_silu_mul(x, *plain, o, t), Error);
  gpu->free(x), gpu->free(o), gpu->free(t);
}

}  // namespace
}  // namespace greta::gputest
