// Fused decode ops (Backend::norm + normed_matmul / normed_swiglu, matmul_add, matmul_add_norm)
// on CUDA vs the CPU backend, which runs their plain definitions (rms_norm, matmul, silu_mul,
// add). With and without the pipelined GEMV weight stream and split-K, token counts in 1-4 tiles
// of 8 and past the GEMV limit (32, the plain ops), k that is not a multiple of the 32-wide
// chunk, row counts that are not a multiple of the 16-row (8 for SwiGLU) block, and biases on
// some targets only.
#include <deque>
#include <string>
#include <vector>

#include "core/error.h"
#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

using GpuFused = GpuTest;

// The GEMV path for up to 32 tokens (the default switches to cuBLASLt past 16), so every
// token-tile count of the GEMV is exercised.
struct Config {
  bool pipe, split_k;
  std::string tag() const { return std::string("pipe ") + (pipe ? "1" : "0") + " split-k " + (split_k ? "1" : "0"); }
  std::unique_ptr<Backend> make() const {
    CudaOptions o;
    o.gemv_max_tokens = 32;
    o.gemv_pipeline = pipe;
    o.split_k = split_k;
    return make_cuda_backend(o);
  }
};
const std::vector<Config> kConfigs = {{true, true}, {false, true}, {true, false}};

struct Case {
  int64_t n, k;
  std::vector<int64_t> ms;  // normed_matmul: one target per m (1-3); normed_swiglu: {m}
  bool swiglu;
};

// Runs norm then normed_matmul (targets with a bias on even ones) or normed_swiglu on both backends and
// compares the outputs.
void check_norm_op(Backend& gpu, Backend& cpu, const Case& c, const std::string& tag, std::mt19937& rng) {
  const int64_t n = c.n, k = c.k;
  const auto xv = random_values(size_t(n * k), 3.f, rng);
  HostWeight norm(DType::F32, {k}, random_values(size_t(k), 1.5f, rng));
  std::deque<HostWeight> ws, bs;  // HostWeight is pinned in memory (t.data points into it)
  const std::vector<int64_t> ms = c.swiglu ? std::vector<int64_t>{c.ms[0], c.ms[0]} : c.ms;
  for (int64_t m : ms) {
    ws.emplace_back(DType::BF16, std::vector<int64_t>{m, k}, random_values(size_t(m * k), 0.3f, rng));
    bs.emplace_back(DType::F32, std::vector<int64_t>{m}, random_values(size_t(m), 1.f, rng));
  }
  std::vector<std::vector<float>> outs[2];
  for (int which = 0; which < 2; ++which) {
    Backend& b = which == 0 ? gpu : cpu;
    auto wn = b.upload(norm.t);
    std::vector<std::unique_ptr<Weight>> w, bias;
    for (size_t i = 0; i < ws.size(); ++i) w.push_back(b.upload(ws[i].t)), bias.push_back(b.upload(bs[i].t));
    Tensor x = make_tensor(b, n, k, xv), h = b.alloc(n, k);
    std::vector<Tensor> o;
    for (int64_t m : ms) {
      o.push_back(b.alloc(n, m));
      if (which == 0) poison(o.back());
    }
    auto t = [&](size_t i) { return Backend::MatmulTarget{w[i].get(), i % 2 == 0 ? bias[i].get() : nullptr, o[i]}; };
    const Backend::NormedRows xn = b.norm(x, *wn, 1e-5f, h);
    if (c.swiglu) b.normed_swiglu(xn, *w[0], *w[1], o[0], o[1]);  // out = o[1]; o[0] is scratch
    else if (ms.size() == 1) b.normed_matmul(xn, {t(0)});
    else if (ms.size() == 2) b.normed_matmul(xn, {t(0), t(1)});
    else b.normed_matmul(xn, {t(0), t(1), t(2)});
    for (Tensor& ot : o) outs[which].push_back(read(b, ot)), b.free(ot);
    b.free(x), b.free(h);
  }
  const std::string what = tag + (c.swiglu ? " normed_swiglu" : " normed_matmul") + " n=" + std::to_string(n) +
                           " k=" + std::to_string(k);
  if (c.swiglu) {
    report(what + " m=" + std::to_string(c.ms[0]), rel_err(outs[0][1], outs[1][1]), kBf16Tol);
    return;
  }
  for (size_t i = 0; i < ms.size(); ++i)
    report(what + " target " + std::to_string(i) + " m=" + std::to_string(ms[i]), rel_err(outs[0][i], outs[1][i]),
           kBf16Tol);
}

TEST_F(GpuFused, NormedOps) {
  const std::vector<Case> cases = {
      {1, 576, {576, 192, 192}, false},  // SmolLM2 q, k, v
      {1, 4096, {4096, 1024, 1024}, false},
      {3, 4104, {577, 7, 33}, false},  // k % 32 != 0, m % 16 != 0
      {2, 64, {5, 1}, false},
      {1, 576, {1536}, true},      // SmolLM2 gate/up
      {8, 4096, {11008}, true},    // Llama-2-7B gate/up, 8 tokens
      {5, 1000, {301}, true},      // m % 8 != 0
      {9, 576, {577, 64}, false},  // 9..32 tokens: 2 and 4 token tiles
      {16, 4104, {300}, true},
      {32, 576, {576, 192, 192}, false},
      {27, 1000, {301}, true},
      {33, 576, {577, 64}, false},  // 33 tokens: the unfused path (cuBLASLt)
      {33, 576, {100}, true},
      {2, 100, {31}, false},  // k % 8 != 0: the unfused path
      {2, 100, {31}, true},
  };
  for (const Config& cf : kConfigs) {
    auto g = cf.make();
    std::mt19937 rng(11);
    for (const Case& c : cases) check_norm_op(*g, *cpu, c, cf.tag(), rng);
  }
}

TEST_F(GpuFused, MatmulAdd) {
  struct Shape {
    int64_t n, m, k;
  };
  // {8, 4096, 11008}, {3, 577, 8200} and {20, 1000, 8216} take the split-K path (few row tiles,
  // k >= 8192; the last two end in a partial 32-wide chunk, 20 tokens are 3 token tiles).
  const std::vector<Shape> shapes = {{1, 576, 1536}, {8, 4096, 4096}, {8, 4096, 11008}, {3, 577, 8200},  {4, 7, 64},
                                     {12, 300, 256}, {32, 576, 1536}, {40, 300, 256},   {20, 1000, 8216}};
  for (const Config& cf : kConfigs) {
    auto g = cf.make();
    std::mt19937 rng(12);
    for (const Shape& s : shapes) {
      const auto av = random_values(size_t(s.n * s.k), 2.f, rng), xv = random_values(size_t(s.n * s.m), 4.f, rng);
      HostWeight w(DType::BF16, {s.m, s.k}, random_values(size_t(s.m * s.k), 0.3f, rng));
      std::vector<float> res[2];
      for (int which = 0; which < 2; ++which) {
        Backend& b = which == 0 ? *g : *cpu;
        auto wt = b.upload(w.t);
        Tensor a = make_tensor(b, s.n, s.k, av), x = make_tensor(b, s.n, s.m, xv), tmp = b.alloc(s.n, s.m);
        for (int rep = 0; rep < 2; ++rep) b.matmul_add(a, *wt, tmp, x);  // x accumulates twice
        res[which] = read(b, x);
        b.free(a), b.free(x), b.free(tmp);
      }
      report(cf.tag() + " matmul_add x2 n=" + std::to_string(s.n) + " m=" + std::to_string(s.m) +
                 " k=" + std::to_string(s.k),
             rel_err(res[0], res[1]), kBf16Tol);
    }
  }
}

// A layer's residual add then the next norm: x += a @ Wr^T with the next norm's input
// prepared (matmul_add_norm), then normed_swiglu, and again with normed_matmul (the second pair
// reuses the sums-of-squares region). On CUDA the norm's work moves into the residual GEMV's
// epilogue (the split form of NormedRows); the CPU runs matmul_add then rms_norm. Hidden sizes
// a multiple of 16 (the split form) and not (the norm kernel).
TEST_F(GpuFused, ResidualAddThenNorm) {
  struct Shape {
    int64_t n, dim, kr, ff;
  };
  const std::vector<Shape> shapes = {{1, 576, 1536, 1536}, {8, 4096, 4096, 1000}, {13, 1024, 11008, 320},
                                     {16, 576, 320, 64},   {3, 200, 64, 72},      {40, 576, 320, 64}};
  for (const Config& cf : kConfigs) {
    auto g = cf.make();
    std::mt19937 rng(14);
    for (const Shape& s : shapes) {
      const auto xv = random_values(size_t(s.n * s.dim), 2.f, rng), av = random_values(size_t(s.n * s.kr), 1.f, rng);
      std::deque<HostWeight> hw;
      hw.emplace_back(DType::BF16, std::vector<int64_t>{s.dim, s.kr}, random_values(size_t(s.dim * s.kr), 0.1f, rng));
      hw.emplace_back(DType::F32, std::vector<int64_t>{s.dim}, random_values(size_t(s.dim), 1.5f, rng));
      for (int i = 0; i < 2; ++i)
        hw.emplace_back(DType::BF16, std::vector<int64_t>{s.ff, s.dim}, random_values(size_t(s.ff * s.dim), 0.3f, rng));
      hw.emplace_back(DType::BF16, std::vector<int64_t>{s.ff, s.dim}, random_values(size_t(s.ff * s.dim), 0.3f, rng));
      std::vector<float> res[2][3];  // swiglu out, matmul out, final x
      for (int which = 0; which < 2; ++which) {
        Backend& b = which == 0 ? *g : *cpu;
        std::vector<std::unique_ptr<Weight>> w;
        for (const HostWeight& h : hw) w.push_back(b.upload(h.t));
        Tensor x = make_tensor(b, s.n, s.dim, xv), a = make_tensor(b, s.n, s.kr, av);
        Tensor h = b.alloc(s.n, s.dim), gate = b.alloc(s.n, s.ff), sw = b.alloc(s.n, s.ff), mo = b.alloc(s.n, s.ff);
        b.normed_swiglu(b.matmul_add_norm(a, *w[0], x, *w[1], 1e-5f, h), *w[2], *w[3], gate, sw);
        b.normed_matmul(b.matmul_add_norm(a, *w[0], x, *w[1], 1e-5f, h), {{w[4].get(), nullptr, mo}});
        res[which][0] = read(b, sw), res[which][1] = read(b, mo), res[which][2] = read(b, x);
        for (Tensor* t : {&x, &a, &h, &gate, &sw, &mo}) b.free(*t);
      }
      const std::string what = cf.tag() + " residual add + norm n=" + std::to_string(s.n) +
                               " dim=" + std::to_string(s.dim) + " ";
      report(what + "swiglu", rel_err(res[0][0], res[1][0]), kBf16Tol);
      report(what + "matmul", rel_err(res[0][1], res[1][1]), kBf16Tol);
      report(what + "x", rel_err(res[0][2], res[1][2]), kBf16Tol);
    }
  }
}

TEST_F(GpuFused, MismatchedShapesThrow) {
  std::mt19937 rng(13);
  HostWeight norm(DType::F32, {64}, random_values(64, 1.f, rng));
  HostWeight w(DType::BF16, {32, 128}, random_values(32 * 128, 1.f, rng));
  auto wn = gpu->upload(norm.t), wt = gpu->upload(w.t);
  Tensor x = gpu->alloc(1, 64), h = gpu->alloc(1, 64), o = gpu->alloc(1, 32);
  EXPECT_THROW(gpu->normed_matmul(gpu->norm(x, *wn, 1e-5f, h), {{wt.get(), nullptr, o}}), Error);  // w takes k = 128
  EXPECT_THROW(gpu->matmul_add(x, *wt, o, o), Error);
  EXPECT_THROW(gpu->normed_swiglu(gpu->norm(x, *wn, 1e-5f, h), *wt, *wt, o, o), Error);
  gpu->free(x), gpu->free(h), gpu->free(o);
}

}  // namespace
}  // namespace greta::gputest
