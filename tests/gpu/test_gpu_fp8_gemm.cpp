// FP8 weights on the FP8 tensor cores (W8A8: greta's kernel for few tokens, gemm_w8a8.cu, and
// cuBLASLt's LtGemm::run_fp8 beyond; fp8_acts.cu) against a reference
// written here from the formats' definitions: each token's activations quantized to e4m3 with
// scale amax / 448 (core/quant_blocks.h float_to_fp8_e4m3), times the weight's decoded values, in
// double. The GPU's own error is then only its fp32 (fast) accumulation and the bf16 output;
// a path that skipped the activation quantization (W8A16) misses the bound by ~10x. Also: the
// residual form (x += a @ w^T), weights whose scales vary along a row (which must take the W8A16
// path and agree with the CPU's exact product), and the switch that turns the path off.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

constexpr double kFp8GemmTol = 4e-3;  // fp32 fast accumulation + bf16 output against the exact product

// out [n, m] = q8(x) [n, k] @ w [m, k]^T, q8 = per-token e4m3 with scale amax / 448.
std::vector<float> w8a8_reference(const std::vector<float>& x, const std::vector<float>& w, int64_t n, int64_t m,
                                  int64_t k) {
  std::vector<float> out(size_t(n * m));
  std::vector<double> xq(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) {
    float amax = 0.f;
    for (int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(x[size_t(i * k + j)]));
    const float s = amax > 0.f ? amax / 448.f : 1.f;
    for (int64_t j = 0; j < k; ++j)
      xq[size_t(j)] = double(s) * fp8_e4m3_to_float(float_to_fp8_e4m3(x[size_t(i * k + j)] / s));
    for (int64_t r = 0; r < m; ++r) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += xq[size_t(j)] * w[size_t(r * k + j)];
      out[size_t(i * m + r)] = float(acc);
    }
  }
  return out;
}

std::vector<float> exact_product(const std::vector<float>& x, const std::vector<float>& w, int64_t n, int64_t m,
                                 int64_t k) {
  std::vector<float> out(size_t(n * m));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < m; ++r) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += double(x[size_t(i * k + j)]) * w[size_t(r * k + j)];
      out[size_t(i * m + r)] = float(acc);
    }
  return out;
}

// Activations with tokens of different sizes and a few large channels, as a model's are: the
// per-token scale must follow each token's own range.
std::vector<float> activations(int64_t n, int64_t k, std::mt19937& rng) {
  std::vector<float> x = random_values(size_t(n * k), 1.f, rng);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      float& v = x[size_t(i * k + j)];
      v = bf16_to_float(float_to_bf16(v * std::ldexp(1.f, int(i % 7) - 3) * (j % 97 == 5 ? 12.f : 1.f)));
    }
  return x;
}

// `w8a8`: a backend with greta's W8A8 kernel for up to 64 tokens (off by default), so both FP8
// GEMMs are tested whatever the default.
class GpuFp8Gemm : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    CudaOptions o;
    o.w8a8_gemm_max_tokens = 64;
    w8a8 = make_cuda_backend(o);
  }
  std::unique_ptr<Backend> w8a8;
};

struct Shape {
  int64_t n, m, k;
};

// backend->matmul of random FP8 weights of each shape against the W8A8 reference (and, looser,
// the unquantized product).
void check_shapes(Backend& be, const char* path, std::initializer_list<Shape> shapes, std::mt19937& rng) {
  for (const Shape& sh : shapes) {
    HostWeight w(DType::F8_B64, {sh.m, sh.k}, random_floats(size_t(sh.m * sh.k), 0.1f, rng));
    auto wg = be.upload(w.t);
    const std::vector<float> x = activations(sh.n, sh.k, rng);
    Tensor xt = make_tensor(be, sh.n, sh.k, x), out = be.alloc(sh.n, sh.m);
    poison(out);
    be.matmul(xt, *wg, nullptr, out);
    const auto got = read(be, out);
    const auto dec = w.decoded();
    const std::string what = std::string("fp8 W8A8 (") + path + ") n=" + std::to_string(sh.n) +
                             " m=" + std::to_string(sh.m) + " k=" + std::to_string(sh.k);
    report(what, rel_err(got, w8a8_reference(x, dec, sh.n, sh.m, sh.k)), kFp8GemmTol);
    // Against the unquantized activations: the activations' e4m3 rounding (~2^-5 relative).
    report(what + " vs W8A16", rel_err(got, exact_product(x, dec, sh.n, sh.m, sh.k)), 6e-2);
    be.free(xt);
    be.free(out);
  }
}

// m and k awkward for tiles (k % 64 == 0 is the format's, m % 8 == 0 the GEMM's); 17 tokens is
// the first step past the decode GEMV.
TEST_F(GpuFp8Gemm, MatmulMatchesTheQuantizedProduct) {
  std::mt19937 rng(11);
  check_shapes(*gpu, "cuBLASLt",
               {Shape{17, 264, 576}, Shape{64, 1000, 1088}, Shape{100, 1000, 1088}, Shape{300, 512, 4096}}, rng);
  // greta's kernel: token tiles of 32 and 64, rows past m, a long k split over blocks; then steps
  // the decode GEMV would take by default, sent to it (its 16-token tile).
  check_shapes(*w8a8, "W8A8 kernel",
               {Shape{17, 264, 576}, Shape{33, 264, 576}, Shape{48, 520, 11008}, Shape{64, 1000, 1088}}, rng);
  CudaOptions small;
  small.gemv_max_tokens = 1;
  small.w8a8_gemm_max_tokens = 64;
  check_shapes(*make_cuda_backend(small), "W8A8 kernel, 16-token tiles", {Shape{2, 136, 640}, Shape{16, 4104, 4096}},
               rng);
}

TEST_F(GpuFp8Gemm, ResidualAddAccumulatesInTheEpilogue) {
  std::mt19937 rng(12);
  for (Backend* be : {w8a8.get(), gpu.get()}) {  // greta's W8A8 kernel, cuBLASLt
    const int64_t n = 40, m = 576, k = 1536;
    HostWeight w(DType::F8_B64, {m, k}, random_floats(size_t(m * k), 0.05f, rng));
    auto wg = be->upload(w.t);
    const std::vector<float> a = activations(n, k, rng), x0 = random_values(size_t(n * m), 1.f, rng);
    Tensor at = make_tensor(*be, n, k, a), xt = make_tensor(*be, n, m, x0), tmp = be->alloc(n, m);
    be->matmul_add(at, *wg, tmp, xt);
    const auto got = read(*be, xt);
    std::vector<float> want = w8a8_reference(a, w.decoded(), n, m, k);
    for (size_t i = 0; i < want.size(); ++i) want[i] += x0[i];
    report(std::string("fp8 W8A8 residual add n=40 m=576 k=1536, ") + (be == gpu.get() ? "cuBLASLt" : "W8A8 kernel"),
           rel_err(got, want), kFp8GemmTol);
    be->free(at);
    be->free(xt);
    be->free(tmp);
  }
}

// q, k, v (normed_matmul) and gate, up (normed_swiglu) past the decode GEMV quantize their
// shared input once; every product must equal the same weight's own matmul of the normed rows,
// bias included: bit for bit on cuBLASLt, and within the GEMM's bound on the W8A8 kernel, which
// takes the weights as segments of one launch: that launch splits k by its total rows, so its
// fp32 sums may be cut where a weight's own launch does not cut them.
TEST_F(GpuFp8Gemm, SharedInputQuantizationMatchesEachWeightsOwnGemm) {
  std::mt19937 rng(14);
  const int64_t n = 40, k = 2048;
  HostWeight wq(DType::F8_B64, {256, k}, random_floats(size_t(256 * k), 0.1f, rng));
  HostWeight wk(DType::F8_B64, {64, k}, random_floats(size_t(64 * k), 0.1f, rng));
  HostWeight wv(DType::F8_B64, {64, k}, random_floats(size_t(64 * k), 0.1f, rng));
  HostWeight wg(DType::F8_B64, {392, k}, random_floats(size_t(392 * k), 0.1f, rng));
  HostWeight wu(DType::F8_B64, {392, k}, random_floats(size_t(392 * k), 0.1f, rng));
  HostWeight norm(DType::F32, {k}, random_values(size_t(k), 1.5f, rng));
  HostWeight bias(DType::F32, {64}, random_values(64, 1.f, rng));
  const std::vector<float> xv = activations(n, k, rng);
  for (Backend* be : {gpu.get(), w8a8.get()}) {
    const bool exact = be == gpu.get();
    const std::string path = exact ? " (cuBLASLt)" : " (W8A8 kernel)";
    auto q = be->upload(wq.t), kk = be->upload(wk.t), v = be->upload(wv.t), g = be->upload(wg.t), u = be->upload(wu.t),
         nw = be->upload(norm.t), b = be->upload(bias.t);
    Tensor x = make_tensor(*be, n, k, xv), h = be->alloc(n, k);
    Tensor oq = be->alloc(n, 256), ok = be->alloc(n, 64), ov = be->alloc(n, 64), gate = be->alloc(n, 392),
           sw = be->alloc(n, 392);
    for (Tensor t : {oq, ok, ov, sw}) poison(t);
    be->normed_matmul(be->norm(x, *nw, 1e-5f, h),
                      {{q.get(), nullptr, oq}, {kk.get(), b.get(), ok}, {v.get(), nullptr, ov}});
    be->normed_swiglu(be->norm(x, *nw, 1e-5f, h), *g, *u, gate, sw);
    const std::vector<float> got_q = read(*be, oq), got_k = read(*be, ok), got_v = read(*be, ov),
                             got_sw = read(*be, sw);
    const auto same = [&](const std::vector<float>& alone, const std::vector<float>& shared, const std::string& what) {
      if (exact) EXPECT_EQ(alone, shared) << "fp8 shared quantization, " << what << path;
      else report("fp8 shared quantization, " + what + path, rel_err(shared, alone), kFp8GemmTol);
    };
    // Each weight alone over the same normed rows.
    Tensor hn = be->alloc(n, k), one = be->alloc(n, 392), up = be->alloc(n, 392);
    be->rms_norm(x, *nw, 1e-5f, hn);
    struct One {
      const char* what;
      Weight* w;
      Weight* bias;
      int64_t m;
      const std::vector<float>* got;
    };
    for (const One& c : {One{"q", q.get(), nullptr, 256, &got_q}, One{"k (bias)", kk.get(), b.get(), 64, &got_k},
                         One{"v", v.get(), nullptr, 64, &got_v}}) {
      Tensor o = be->alloc(n, c.m);
      be->matmul(hn, *c.w, c.bias, o);
      same(read(*be, o), *c.got, c.what);
      be->free(o);
    }
    be->matmul(hn, *g, nullptr, one);
    be->matmul(hn, *u, nullptr, up);
    be->silu_mul(one, up, up);
    same(read(*be, up), got_sw, "gate/up");
    // And the products are W8A8 ones: within the quantized product's bound of the normed rows.
    report("fp8 shared quantization q vs reference" + path,
           rel_err(got_q, w8a8_reference(read(*be, hn), wq.decoded(), n, 256, k)), kFp8GemmTol);
    for (Tensor t : {x, h, oq, ok, ov, gate, sw, hn, one, up}) be->free(t);
  }
}

// Scales that vary along a row (a 128 x 128 tile-scaled checkpoint, or F8_B64's own per-block
// form) have no place in the FP8 GEMM's per-row scales: such a weight takes the W8A16 paths and
// agrees with the CPU's exact product to bf16 accuracy. So does every FP8 weight with the switch off.
TEST_F(GpuFp8Gemm, OtherScalesAndTheSwitchTakeTheW8A16Paths) {
  std::mt19937 rng(13);
  const int64_t n = 40, m = 128, k = 640;
  HostWeight w(DType::F8_B64, {m, k}, random_floats(size_t(m * k), 0.1f, rng));
  const size_t bb = block_bytes(DType::F8_B64);
  float scale = 0.f;  // block 3 of row 5 at another scale than the rest of its row
  std::memcpy(&scale, w.bytes.data() + (5 * (k / 64) + 3) * bb, 4);
  scale *= 2.f;
  std::memcpy(w.bytes.data() + (5 * (k / 64) + 3) * bb, &scale, 4);
  HostWeight uniform(DType::F8_B64, {m, k}, random_floats(size_t(m * k), 0.1f, rng));
  CudaOptions off;
  off.fp8_tensor_cores = false;
  auto gpu_off = make_cuda_backend(off);
  auto exact = make_cpu_backend({.n_threads = 0, .exact_matmul = true});
  const std::vector<float> x = activations(n, k, rng);
  struct Case {
    const char* what;
    Backend* gpu;
    HostWeight* w;
  };
  for (const Case& c :
       {Case{"fp8 mixed scales (W8A16)", gpu.get(), &w}, Case{"fp8 switch off (W8A16)", gpu_off.get(), &uniform}}) {
    auto wg = c.gpu->upload(c.w->t);
    auto wc = exact->upload(c.w->t);
    Tensor xg = make_tensor(*c.gpu, n, k, x), og = c.gpu->alloc(n, m);
    Tensor xc = make_tensor(*exact, n, k, x), oc = exact->alloc(n, m);
    poison(og);
    c.gpu->matmul(xg, *wg, nullptr, og);
    exact->matmul(xc, *wc, nullptr, oc);
    report(c.what, rel_err(read(*c.gpu, og), read(*exact, oc)), kBf16Tol);
    c.gpu->free(xg);
    c.gpu->free(og);
    exact->free(xc);
    exact->free(oc);
  }
}

}  // namespace
}  // namespace greta::gputest
