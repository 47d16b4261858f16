// GGUF weights kept packed on the device (quant_planes.h, gemv_weights.cuh) against the CPU
// backend with exact matmuls (dequantize, then float products), which reads the same blocks:
// every format through the decode GEMV (1..32 tokens: one launch per 8), the many-token path
// (dequantized slices + cuBLASLt) and the fused decode ops; row lengths that end in a partial
// GEMV chunk; formats that differ between the matrices of one fused op.
#include <algorithm>
#include <deque>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

const DType kFormats[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                          DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool k_quant(DType t) { return block_elems(t) == 256; }
// The decode GEMV computes d q + m of the formats with a min in bf16x2 math (gemv_weights.cuh):
// the scale's and the min's own rounding double its error against exact products (a fused layer
// measured 1.3e-2 against the symmetric formats' 0.75e-2), still far below the formats' own
// quantization error. The many-token path dequantizes in fp32 and meets kBf16Tol.
bool has_min(DType t) { return t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K; }
double gemv_tol(DType t) { return has_min(t) ? 2 * kBf16Tol : kBf16Tol; }

class GpuQuant : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    CudaOptions o;
    o.gemv_max_tokens = 32;  // every GEMV launch count; 40 tokens take the cuBLASLt path
    packed = make_cuda_backend(o);
    exact = make_cpu_backend({.n_threads = 0, .exact_matmul = true});
  }
  std::unique_ptr<Backend> packed, exact;
};

std::string fmt(DType t) { return std::string(dtype_name(t)); }

TEST_F(GpuQuant, WeightsStayPacked) {
  std::mt19937 rng(1);
  for (DType t : kFormats) {
    const int64_t m = 48, k = 512;
    HostWeight w(t, {m, k}, random_floats(size_t(m * k), 1.f, rng));
    auto wg = packed->upload(w.t);
    EXPECT_EQ(wg->dtype, t) << fmt(t);
    // The planes hold the file's bytes plus at most 256 bytes of alignment per plane.
    EXPECT_GE(wg->bytes, w.bytes.size()) << fmt(t);
    EXPECT_LE(wg->bytes, w.bytes.size() + 4 * 256) << fmt(t);
  }
}

TEST_F(GpuQuant, MatmulEveryFormat) {
  std::mt19937 rng(2);
  for (DType t : kFormats) {
    // k: 576 ends in a partial 128-value chunk; 2816 = 11 super-blocks; m not a multiple of 16.
    const std::vector<int64_t> ks = k_quant(t) ? std::vector<int64_t>{768, 2816} : std::vector<int64_t>{576, 1056};
    for (int64_t k : ks)
      for (int64_t m : {int64_t(40), int64_t(301)}) {
        HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
        HostWeight bias(DType::F32, {m}, random_values(size_t(m), 1.f, rng));
        auto wg = packed->upload(w.t), wc = exact->upload(w.t);
        auto bg = packed->upload(bias.t), bc = exact->upload(bias.t);
        for (int64_t n : {1, 5, 8, 13, 32, 40}) {
          const auto xv = random_values(size_t(n * k), 1.f, rng);
          Tensor xg = make_tensor(*packed, n, k, xv), xc = make_tensor(*exact, n, k, xv);
          Tensor og = packed->alloc(n, m), oc = exact->alloc(n, m);
          poison(og);
          const bool b = n % 2 == 1;
          packed->matmul(xg, *wg, b ? bg.get() : nullptr, og);
          exact->matmul(xc, *wc, b ? bc.get() : nullptr, oc);
          report("packed matmul " + fmt(t) + " n=" + std::to_string(n) + " m=" + std::to_string(m) +
                     " k=" + std::to_string(k) + (b ? " +bias" : ""),
                 rel_err(read(*packed, og), read(*exact, oc)), n <= 32 ? gemv_tol(t) : kBf16Tol);
          packed->free(xg), packed->free(og), exact->free(xc), exact->free(oc);
        }
      }
  }
}

// One decode layer's fused ops over packed weights of format t (the o/down projection in `res`):
// norm + q/k/v targets, matmul_add_norm (the split norm) into normed_swiglu, and the residual
// add of the down projection, for n tokens; every output compared with the CPU.
void check_layer(Backend& gpu, Backend& cpu, DType t, DType res, int64_t n, std::mt19937& rng) {
  const int64_t dim = k_quant(t) || k_quant(res) ? 512 : 576, ffn = k_quant(t) || k_quant(res) ? 1536 : 1568;
  HostWeight norm1(DType::F32, {dim}, random_values(size_t(dim), 1.5f, rng));
  HostWeight norm2(DType::F32, {dim}, random_values(size_t(dim), 1.5f, rng));
  std::deque<HostWeight> w;
  const int64_t shapes[][2] = {
      {dim, dim}, {dim / 3 / 64 * 64, dim}, {dim / 3 / 64 * 64, dim}, {dim, dim}, {ffn, dim}, {ffn, dim}, {dim, ffn}};
  for (int i = 0; i < 7; ++i) {
    const DType wt = i == 3 || i == 6 ? res : t;
    w.emplace_back(wt, std::vector<int64_t>{shapes[i][0], shapes[i][1]},
                   random_floats(size_t(shapes[i][0] * shapes[i][1]), 0.2f, rng));
  }
  const auto xv = random_values(size_t(n * dim), 2.f, rng);
  std::vector<std::vector<float>> outs[2];
  for (int which = 0; which < 2; ++which) {
    Backend& b = which == 0 ? gpu : cpu;
    auto n1 = b.upload(norm1.t), n2 = b.upload(norm2.t);
    std::vector<std::unique_ptr<Weight>> up;
    for (const HostWeight& hw : w) up.push_back(b.upload(hw.t));
    Tensor x = make_tensor(b, n, dim, xv), h = b.alloc(n, dim), q = b.alloc(n, dim);
    Tensor kk = b.alloc(n, shapes[1][0]), v = b.alloc(n, shapes[2][0]);
    Tensor g = b.alloc(n, ffn), f = b.alloc(n, ffn), tmp = b.alloc(n, dim);
    const Backend::NormedRows in1 = b.norm(x, *n1, 1e-5f, h);
    b.normed_matmul(in1, {{up[0].get(), nullptr, q}, {up[1].get(), nullptr, kk}, {up[2].get(), nullptr, v}});
    const Backend::NormedRows in2 = b.matmul_add_norm(q, *up[3], x, *n2, 1e-5f, h);
    b.normed_swiglu(in2, *up[4], *up[5], g, f);
    b.matmul_add(f, *up[6], tmp, x);
    for (Tensor o : {q, kk, v, f, x}) outs[which].push_back(read(b, o));
    for (Tensor o : {x, h, q, kk, v, g, f, tmp}) b.free(o);
  }
  const char* names[] = {"q", "k", "v", "swiglu", "residual"};
  for (size_t i = 0; i < outs[0].size(); ++i)
    report("layer " + fmt(t) + "/" + fmt(res) + " n=" + std::to_string(n) + " " + names[i],
           rel_err(outs[0][i], outs[1][i]), std::max(gemv_tol(t), gemv_tol(res)));
}

TEST_F(GpuQuant, FusedDecodeOps) {
  std::mt19937 rng(3);
  for (DType t : kFormats)
    for (int64_t n : {1, 8, 11}) check_layer(*packed, *exact, t, t, n, rng);
}

TEST_F(GpuQuant, MixedFormatsInOneLayer) {
  // As a Q4_K_M file mixes them: Q4_K projections with Q6_K output/down projections, and
  // 32-value formats next to each other.
  std::mt19937 rng(4);
  for (int64_t n : {1, 3}) {
    check_layer(*packed, *exact, DType::Q4_K, DType::Q6_K, n, rng);
    check_layer(*packed, *exact, DType::Q5_0, DType::Q8_0, n, rng);
  }
}

TEST_F(GpuQuant, PackedAndConvertedUploadsAgree) {
  // The same file through both CUDA upload paths: packed planes read by the GEMV, and the bf16
  // conversion (CudaOptions::packed_weights = false), which dequantizes in fp32.
  CudaOptions o;
  o.packed_weights = false;
  auto converted = make_cuda_backend(o);
  std::mt19937 rng(5);
  for (DType t : kFormats) {
    const int64_t m = 130, k = k_quant(t) ? 1024 : 992, n = 4;
    HostWeight w(t, {m, k}, random_floats(size_t(m * k), 1.f, rng));
    auto wp = packed->upload(w.t), wc = converted->upload(w.t);
    EXPECT_EQ(wc->dtype, DType::BF16);
    const auto xv = random_values(size_t(n * k), 1.f, rng);
    Tensor xp = make_tensor(*packed, n, k, xv), xc = make_tensor(*converted, n, k, xv);
    Tensor op = packed->alloc(n, m), oc = converted->alloc(n, m);
    packed->matmul(xp, *wp, nullptr, op);
    converted->matmul(xc, *wc, nullptr, oc);
    report("packed vs converted " + fmt(t), rel_err(read(*packed, op), read(*converted, oc)), has_min(t) ? 1e-2 : 5e-3);
    packed->free(xp), packed->free(op), converted->free(xc), converted->free(oc);
  }
}

}  // namespace
}  // namespace greta::gputest
