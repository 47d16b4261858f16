// CUDA ops vs the CPU backend on random inputs of awkward shapes: matmul (GEMV path n <= 8
// and cuBLASLt path), rms_norm, head_rms_norm, add, silu_mul, gelu_mul, scale, embed, gather_rows, upload of every
// weight format, to_host, and the errors the backend must raise instead of crashing.
#include <string>
#include <vector>

#include "core/error.h"
#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

using GpuOps = GpuTest;

std::string shape(const char* op, int64_t n, int64_t m, int64_t k) {
  return std::string(op) + " n=" + std::to_string(n) + " m=" + std::to_string(m) + " k=" + std::to_string(k);
}

// out = x @ w^T (+ bias) on both backends; w given as float values stored as `dtype`.
void check_matmul(Backend& gpu, Backend& cpu, int64_t n, int64_t m, int64_t k, DType dtype, bool with_bias, double tol,
                  std::mt19937& rng) {
  const auto xv = random_values(size_t(n * k), 1.f, rng);
  const auto wv = random_values(size_t(m * k), 0.5f, rng);
  const auto bv = random_values(size_t(m), 1.f, rng);
  HostWeight w(dtype, {m, k}, wv);
  HostWeight b(DType::F32, {m}, bv);
  auto wg = gpu.upload(w.t), wc = cpu.upload(w.t);
  auto bg = gpu.upload(b.t), bc = cpu.upload(b.t);
  Tensor xg = make_tensor(gpu, n, k, xv), xc = make_tensor(cpu, n, k, xv);
  Tensor og = gpu.alloc(n, m), oc = cpu.alloc(n, m);
  poison(og);
  gpu.matmul(xg, *wg, with_bias ? bg.get() : nullptr, og);
  cpu.matmul(xc, *wc, with_bias ? bc.get() : nullptr, oc);
  report(shape("matmul", n, m, k) + " " + std::string(dtype_name(dtype)) + (with_bias ? " +bias" : ""),
         rel_err(read(gpu, og), read(cpu, oc)), tol);
  gpu.free(xg), gpu.free(og), cpu.free(xc), cpu.free(oc);
}

TEST_F(GpuOps, MatmulAwkwardShapesBf16) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 3, 8, 9, 16, 23, 32, 37, 577})  // GEMV token tiles of 8 up to 32, then cuBLASLt
    for (int64_t k : {64, 576, 4096})
      for (int64_t m : {1, 7, 577, 4096}) {
        if (n * m * k > int64_t(2) << 30) continue;  // keeps the CPU reference under a few seconds
        check_matmul(*gpu, *cpu, n, m, k, DType::BF16, (m + n) % 2 == 0, kBf16Tol, rng);
      }
}

TEST_F(GpuOps, MatmulF32WeightsWithBias) {
  std::mt19937 rng(2);
  for (int64_t n : {1, 9}) check_matmul(*gpu, *cpu, n, 577, 576, DType::F32, true, kBf16Tol, rng);
}

TEST_F(GpuOps, MatmulQuantizedWeights) {
  // The CPU multiplies quantized blocks by int8-quantized activations; the GPU dequantizes to
  // bf16. Both approximate x @ w^T of the *stored* weights, so the bound is looser.
  std::mt19937 rng(3);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::F8_B64, DType::I4_G128})
    for (int64_t n : {1, 37}) check_matmul(*gpu, *cpu, n, 577, 512, t, false, 3e-2, rng);
}

TEST_F(GpuOps, UploadDecodesEveryFormatLikeTheCpu) {
  // embed() of every row reads the uploaded weight back: it must equal dequantize_row's
  // values rounded to bf16.
  std::mt19937 rng(4);
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                  DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::F8_B64, DType::I4_G32, DType::I4_G64, DType::I4_G128}) {
    const int64_t rows = 37, cols = 512;
    HostWeight w(t, {rows, cols}, random_floats(size_t(rows * cols), 2.f, rng));
    auto wg = gpu->upload(w.t);
    EXPECT_EQ(wg->n_out, rows);
    EXPECT_EQ(wg->n_in, cols);
    std::vector<int32_t> ids(static_cast<size_t>(rows));
    for (int32_t i = 0; i < int32_t(rows); ++i) ids[size_t(i)] = (i * 7) % int32_t(rows);
    Tensor out = gpu->alloc(rows, cols);
    poison(out);
    gpu->embed(*wg, ids.data(), int(rows), out);
    const auto got = read(*gpu, out);
    const auto dec = w.decoded();
    std::vector<float> want(got.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        want[size_t(r * cols + c)] = bf16_to_float(float_to_bf16(dec[size_t(ids[size_t(r)] * cols + c)]));
    // Plain types: the same float formula and rounding, equal up to an occasional 1-ulp bf16
    // difference. Quantized types stay packed and are dequantized with bf16 math (the scale is
    // rounded to bf16 before the product is): two roundings of at most 2^-9 each.
    report("upload+embed " + std::string(dtype_name(t)), rel_err(got, want), is_quantized(t) ? 4e-3 : 2e-3);
    gpu->free(out);
  }
}

TEST_F(GpuOps, RmsNorm) {
  std::mt19937 rng(5);
  for (int64_t n : {1, 3, 37, 577})
    for (int64_t dim : {64, 576, 4096, 13}) {
      const auto xv = random_values(size_t(n * dim), 3.f, rng);
      HostWeight w(DType::F32, {dim}, random_values(size_t(dim), 1.f, rng));
      auto wg = gpu->upload(w.t), wc = cpu->upload(w.t);
      Tensor xg = make_tensor(*gpu, n, dim, xv), xc = make_tensor(*cpu, n, dim, xv);
      Tensor og = gpu->alloc(n, dim), oc = cpu->alloc(n, dim);
      poison(og);
      gpu->rms_norm(xg, *wg, 1e-5f, og);
      cpu->rms_norm(xc, *wc, 1e-5f, oc);
      report(shape("rms_norm", n, dim, 0), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
      gpu->rms_norm(xg, *wg, 1e-5f, xg);  // in place
      report(shape("rms_norm in-place", n, dim, 0), rel_err(read(*gpu, xg), read(*cpu, oc)), kBf16Tol);
      gpu->free(xg), gpu->free(og), cpu->free(xc), cpu->free(oc);
    }
}

// Qwen3's q/k norm: each head_dim slice of a row normalized with its own RMS, shared weights.
TEST_F(GpuOps, HeadRmsNorm) {
  std::mt19937 rng(11);
  for (int64_t n : {1, 5, 130})
    for (int64_t hd : {64, 128})
      for (int64_t heads : {2, 8, 32}) {
        const int64_t cols = heads * hd;
        const auto xv = random_values(size_t(n * cols), 4.f, rng);
        HostWeight w(DType::F32, {hd}, random_values(size_t(hd), 1.5f, rng));
        auto wg = gpu->upload(w.t), wc = cpu->upload(w.t);
        Tensor xg = make_tensor(*gpu, n, cols, xv), xc = make_tensor(*cpu, n, cols, xv);
        gpu->head_rms_norm(xg, *wg, 1e-6f);
        cpu->head_rms_norm(xc, *wc, 1e-6f);
        report(shape("head_rms_norm", n, heads, hd), rel_err(read(*gpu, xg), read(*cpu, xc)), kBf16Tol);
        gpu->free(xg), cpu->free(xc);
      }
}

TEST_F(GpuOps, AddSiluMulGeluMulScale) {
  std::mt19937 rng(6);
  for (auto [n, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 64}, {3, 576}, {37, 13}, {577, 1536}, {5, 4099}}) {
    const auto av = random_values(size_t(n * c), 4.f, rng), bv = random_values(size_t(n * c), 4.f, rng);
    Tensor ag = make_tensor(*gpu, n, c, av), bg = make_tensor(*gpu, n, c, bv), og = gpu->alloc(n, c);
    Tensor ac = make_tensor(*cpu, n, c, av), bc = make_tensor(*cpu, n, c, bv), oc = cpu->alloc(n, c);
    poison(og);
    gpu->add(ag, bg, og);
    cpu->add(ac, bc, oc);
    report(shape("add", n, c, 0), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
    poison(og);
    gpu->silu_mul(ag, bg, og);
    cpu->silu_mul(ac, bc, oc);
    report(shape("silu_mul", n, c, 0), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
    gpu->silu_mul(ag, bg, ag);  // out aliases gate
    report(shape("silu_mul in-place", n, c, 0), rel_err(read(*gpu, ag), read(*cpu, oc)), kBf16Tol);
    poison(og);
    gpu->gelu_mul(bg, bg, og);  // Gemma's GeGLU (gate = up = b)
    cpu->gelu_mul(bc, bc, oc);
    report(shape("gelu_mul", n, c, 0), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
    gpu->scale(bg, 25.3f, og);  // Gemma's embedding scale
    cpu->scale(bc, 25.3f, oc);
    report(shape("scale", n, c, 0), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
    gpu->free(ag), gpu->free(bg), gpu->free(og), cpu->free(ac), cpu->free(bc), cpu->free(oc);
  }
}

TEST_F(GpuOps, EmbedAndGatherRows) {
  std::mt19937 rng(7);
  const int64_t vocab = 1000, dim = 576;
  HostWeight table(DType::Q8_0, {vocab, dim}, random_values(size_t(vocab * dim), 1.f, rng));
  auto tg = gpu->upload(table.t), tc = cpu->upload(table.t);
  std::vector<int32_t> toks = {0, 999, 5, 5, 123, 777, 1};
  const int n = int(toks.size());
  Tensor og = gpu->alloc(n, dim), oc = cpu->alloc(n, dim);
  poison(og);
  gpu->embed(*tg, toks.data(), n, og);
  cpu->embed(*tc, toks.data(), n, oc);
  report("embed Q8_0 table", rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
  const std::vector<int32_t> rows = {6, 0, 3};
  Tensor gg = gpu->alloc(3, dim), gc = cpu->alloc(3, dim);
  poison(gg);
  gpu->gather_rows(og, rows, gg);
  cpu->gather_rows(oc, rows, gc);
  report("gather_rows", rel_err(read(*gpu, gg), read(*cpu, gc)), kBf16Tol);
  // Out-of-range ids are user input: a clear error, not a fault.
  std::vector<int32_t> bad = {1, int32_t(vocab)};
  EXPECT_THROW(gpu->embed(*tg, bad.data(), 2, gg.rows_slice(0, 2)), Error);
  EXPECT_THROW(gpu->gather_rows(og, {int32_t(n)}, gg.rows_slice(0, 1)), Error);
  gpu->free(og), gpu->free(gg), cpu->free(oc), cpu->free(gc);
}

TEST_F(GpuOps, ChainedOpsSeeEachOthersResults) {
  // A decode-shaped chain (norm -> matmul -> silu_mul -> matmul -> add) with no host sync in
  // between: catches a kernel that starts reading its input before the previous one finished
  // (the GEMV may be launched early with programmatic dependent launch).
  std::mt19937 rng(9);
  const int64_t dim = 576, ffn = 1536;
  for (int64_t n : {1, 5}) {
    const auto xv = random_values(size_t(n * dim), 2.f, rng);
    HostWeight norm(DType::F32, {dim}, random_values(size_t(dim), 1.f, rng));
    HostWeight w1(DType::BF16, {ffn, dim}, random_values(size_t(ffn * dim), 0.1f, rng));
    HostWeight w3(DType::BF16, {ffn, dim}, random_values(size_t(ffn * dim), 0.1f, rng));
    HostWeight w2(DType::BF16, {dim, ffn}, random_values(size_t(ffn * dim), 0.1f, rng));
    std::vector<float> outs[2];
    for (int which = 0; which < 2; ++which) {
      Backend& b = which == 0 ? *gpu : *cpu;
      auto wn = b.upload(norm.t), a = b.upload(w1.t), c = b.upload(w3.t), d = b.upload(w2.t);
      Tensor x = make_tensor(b, n, dim, xv), h = b.alloc(n, dim), g = b.alloc(n, ffn), u = b.alloc(n, ffn);
      for (int rep = 0; rep < 3; ++rep) {  // x accumulates: each round depends on the last
        b.rms_norm(x, *wn, 1e-5f, h);
        b.matmul(h, *a, nullptr, g);
        b.matmul(h, *c, nullptr, u);
        b.silu_mul(g, u, g);
        b.matmul(g, *d, nullptr, h);
        b.add(x, h, x);
      }
      outs[which] = read(b, x);
      for (Tensor* t : {&x, &h, &g, &u}) b.free(*t);
    }
    report("chain norm/matmul/silu/matmul/add x3 n=" + std::to_string(n), rel_err(outs[0], outs[1]), 2 * kBf16Tol);
  }
}

TEST_F(GpuOps, ShapeMismatchThrows) {
  std::mt19937 rng(8);
  HostWeight w(DType::BF16, {7, 64}, random_values(7 * 64, 1.f, rng));
  auto wg = gpu->upload(w.t);
  Tensor x = gpu->alloc(2, 65), out = gpu->alloc(2, 7);
  EXPECT_THROW(gpu->matmul(x, *wg, nullptr, out), Error);
  EXPECT_THROW(gpu->rms_norm(out, *wg, 1e-5f, out), Error);  // a 2-D weight is not a norm scale
  gpu->free(x), gpu->free(out);
  EXPECT_FALSE(gpu->name().empty());
  EXPECT_EQ(gpu->act_dtype(), DType::BF16);
}

}  // namespace
}  // namespace greta::gputest
