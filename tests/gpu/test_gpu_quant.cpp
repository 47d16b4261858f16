// Quantized weights kept packed on the device (quant_planes.h, gemv_weights.cuh: GGUF's block
// formats and the Hugging Face FP8 / int4 ones) against the CPU backend with exact matmuls
// (dequantize, then float products), which reads the same blocks: every format through the
// decode GEMV (1..32 tokens in token tiles of 8), the batched packed GEMM (gemm_packed.h: token
// tiles of 16 and 32, split k), the prefill path (dequantized slices + cuBLASLt) and the fused
// decode ops; row lengths that end in a partial chunk; formats that differ between the matrices
// of one fused op. The int8 paths (one-token GEMVs, the batched int8 GEMM of gemm_int8.h) against
// a host model of their arithmetic.
#include <algorithm>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

const DType kFormats[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1,   DType::Q5_0,   DType::Q5_1,   DType::Q4_K,
                          DType::Q5_K, DType::Q6_K, DType::F8_B64, DType::I4_G32, DType::I4_G64, DType::I4_G128};

// The decode GEMV computes d q + m of the formats with a min (I4_G*: m = -d z; not Q5_1) in
// bf16x2 math (gemv_weights.cuh): the scale's and the min's own rounding double its error against
// exact products (a fused layer measured 1.3e-2 against the symmetric formats' 0.75e-2), still
// far below the formats' own quantization error. The batched GEMM and the prefill path dequantize in fp32 and
// meets kBf16Tol.
bool has_min(DType t) {
  return t == DType::Q4_1 || t == DType::Q4_K || t == DType::Q5_K || t == DType::I4_G32 || t == DType::I4_G64 ||
         t == DType::I4_G128;
}
// One-token GEMVs over the GGUF formats quantize x to int8 per 32 values (as llama.cpp and the
// CPU backend do; CudaOptions::packed_int8_acts), which adds x's rounding (~1/254 of the group's
// largest |x|) to the bf16 rounding: up to ~1% of a dot product with the heavy-tailed SwiGLU output
// against the exact reference. Int8ActivationsMatchAHostReference checks that path tightly.
bool int8_x_format(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 ||
         t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}
// Bytes [first, last) of a block that hold its quants (high bits included), core/quant_blocks.h.
std::pair<size_t, size_t> quant_bytes(DType t) {
  switch (t) {
    case DType::Q4_1:
    case DType::Q5_1: return {4, block_bytes(t)};
    case DType::Q4_K:
    case DType::Q5_K: return {16, block_bytes(t)};
    case DType::Q6_K: return {0, 192};    // ql, qh; then the scales and d
    default: return {2, block_bytes(t)};  // Q8_0, Q4_0, Q5_0: after the fp16 d
  }
}
double gemv_tol(DType t, int64_t n) { return has_min(t) || (n == 1 && int8_x_format(t)) ? 2 * kBf16Tol : kBf16Tol; }
// A decode layer's chain (q/k/v, o, gate/up, down) adds that rounding at every GEMV, and the
// SwiGLU output's groups are dominated by a few large values: measured up to 3.2e-2 at the end of
// the layer, where the bf16 path stays under 1e-2.
double layer_tol(DType t, DType res, int64_t n) {
  if (n == 1 && (int8_x_format(t) || int8_x_format(res))) return 4e-2;
  return std::max(gemv_tol(t, n), gemv_tol(res, n));
}
// Two row lengths k a format's blocks divide, awkward for the GEMV: 576 ends in a partial
// 128-value chunk of the 4-bit formats; 1056, 1088 and 1152 are odd numbers of blocks (33 x 32,
// 17 x 64, 9 x 128), 2816 = 11 super-blocks.
std::vector<int64_t> row_lengths(DType t) {
  switch (block_elems(t)) {
    case 32: return {576, 1056};
    case 64: return {576, 1088};
    case 128: return {640, 1152};
    default: return {768, 2816};
  }
}
// A decode layer's (dim, ffn) for two formats: both divide each by the larger block size.
std::pair<int64_t, int64_t> layer_dims(DType t, DType res) {
  switch (std::max(block_elems(t), block_elems(res))) {
    case 32: return {576, 1568};
    case 64: return {576, 1600};
    case 128: return {640, 1664};
    default: return {512, 1536};
  }
}

class GpuQuant : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    CudaOptions o;
    o.fp8_tensor_cores = false;  // FP8 through the W8A16 paths, as every other format (W8A8: test_gpu_fp8_gemm.cpp)
    o.gemv_max_tokens = 32;      // every GEMV launch count; 40 tokens take the batched packed GEMM
    packed = make_cuda_backend(o);
    o.packed_gemv_max_tokens = 8;  // 9+ tokens through the batched GEMM and the unfused ops,
    o.packed_gemm_max_tokens = 256;
    batched = make_cuda_backend(o);
    o.packed_gemm_max_tokens = 0;  // 9+ tokens through dequantized slices and cuBLASLt
    sliced = make_cuda_backend(o);
    exact = make_cpu_backend({.n_threads = 0, .exact_matmul = true});
  }
  std::unique_ptr<Backend> packed, batched, sliced, exact;
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

TEST_F(GpuQuant, HuggingFaceTypesDecodeExactly) {
  // F8_B64 and I4_G* values are one fp32 product (scale * e4m3, d * (q - z)) on both backends,
  // rounded to bf16 once on the GPU, so embedding rows equal the CPU's rounded values exactly.
  // Zero points past 15 too: GPTQ stores zero - 1, so 16 after the + 1; any byte must hold.
  std::mt19937 rng(7);
  for (DType t : {DType::F8_B64, DType::I4_G32, DType::I4_G64, DType::I4_G128}) {
    const int64_t m = 7, k = 512;
    HostWeight w(t, {m, k}, random_floats(size_t(m * k), 3.f, rng));
    if (t != DType::F8_B64) {
      const size_t bb = block_bytes(t);  // the zero point is byte 2 of every block
      for (size_t b = 0; b < w.bytes.size() / bb; ++b)
        w.bytes[b * bb + 2] = uint8_t(b % 3 == 0 ? 16 : b % 3 == 1 ? 200 : 7);
    }
    auto wg = packed->upload(w.t);
    std::vector<int32_t> ids(static_cast<size_t>(m));
    for (int32_t i = 0; i < int32_t(m); ++i) ids[size_t(i)] = int32_t(m) - 1 - i;
    Tensor out = packed->alloc(m, k);
    poison(out);
    packed->embed(*wg, ids.data(), int(m), out);
    const auto got = read(*packed, out), dec = w.decoded();
    int64_t differ = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < k; ++c)
        differ += got[size_t(r * k + c)] != bf16_to_float(float_to_bf16(dec[size_t(ids[size_t(r)] * k + c)]));
    EXPECT_EQ(differ, 0) << fmt(t) << ": values that differ from the CPU's rounded to bf16";
    packed->free(out);
  }
}

TEST_F(GpuQuant, MatmulEveryFormat) {
  std::mt19937 rng(2);
  for (DType t : kFormats) {
    // m not a multiple of 16; 40 tokens take the batched packed GEMM.
    for (int64_t k : row_lengths(t))
      for (int64_t m : {int64_t(40), int64_t(301)}) {
        HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
        HostWeight bias(DType::F32, {m}, random_values(size_t(m), 1.f, rng));
        auto wg = packed->upload(w.t), wc = exact->upload(w.t);
        auto bg = packed->upload(bias.t), bc = exact->upload(bias.t);
        for (int64_t n : {1, 3, 8, 13, 17, 32, 40}) {
          const auto xv = random_values(size_t(n * k), 1.f, rng);
          Tensor xg = make_tensor(*packed, n, k, xv), xc = make_tensor(*exact, n, k, xv);
          Tensor og = packed->alloc(n, m), oc = exact->alloc(n, m);
          poison(og);
          const bool b = n % 2 == 1;
          packed->matmul(xg, *wg, b ? bg.get() : nullptr, og);
          exact->matmul(xc, *wc, b ? bc.get() : nullptr, oc);
          report("packed matmul " + fmt(t) + " n=" + std::to_string(n) + " m=" + std::to_string(m) +
                     " k=" + std::to_string(k) + (b ? " +bias" : ""),
                 rel_err(read(*packed, og), read(*exact, oc)), n <= 32 ? gemv_tol(t, n) : kBf16Tol);
          packed->free(xg), packed->free(og), exact->free(xc), exact->free(oc);
        }
      }
  }
}

// A row length of about 4096 (the batched GEMM splits its k over several blocks) that is a
// whole number of the format's blocks but not of the GEMM's 64- or 128-value chunks where the
// blocks allow it.
int64_t long_row(DType t) {
  switch (block_elems(t)) {
    case 32: return 4160;   // 130 blocks, 32.5 chunks of 128
    case 64: return 4160;   // 65 blocks
    case 128: return 4224;  // 33 blocks
    default: return 4352;   // 17 super-blocks
  }
}

// The int8 path alone, against a host model of it: x rounded to bf16 (as the device holds it),
// then per 32 values d = amax / 127 and q = x * 127 / amax rounded to nearest even (the device's
// fp32 operations, so the same int8 values); each weight value w = d_w q_w + m (m: what a zero
// quant decodes to, the group's min or offset; Q6_K: per 16 values) multiplies the int8 x in its
// d_w q_w part and the exact x in its m part, as the kernel does. What is left is summation
// order and the bf16 output.
// out [n, m] of that model for x [n, k] (each token's row quantized on its own). exact_min false:
// m multiplies the int8 x too (the int8 GEMM's Q4_0, whose offset -8 d stays inside its int8
// products, as in llama.cpp's and the CPU backend's Q4_0 dot product).
std::vector<float> int8_reference(DType t, const HostWeight& w, int64_t m, int64_t k, std::vector<float> xv, int64_t n,
                                  bool exact_min = true) {
  const auto [qa, qb] = quant_bytes(t);
  const std::vector<float> wv = w.decoded();
  std::vector<uint8_t> zeroed = w.bytes;  // every quant 0: each value decodes to its group's m
  for (size_t b = 0; b < zeroed.size(); b += block_bytes(t))
    std::fill(zeroed.begin() + long(b + qa), zeroed.begin() + long(b + qb), uint8_t(0));
  std::vector<float> mv(wv.size());
  for (int64_t r = 0; r < m; ++r) dequantize_row(t, zeroed.data() + size_t(r) * row_bytes(t, k), mv.data() + r * k, k);
  std::vector<float> xq(xv.size());
  for (float& v : xv) v = bf16_to_float(float_to_bf16(v));
  for (int64_t g = 0; g < n * k; g += 32) {
    float amax = 0.f;
    for (int64_t i = g; i < g + 32; ++i) amax = std::max(amax, std::fabs(xv[size_t(i)]));
    const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
    for (int64_t i = g; i < g + 32; ++i) xq[size_t(i)] = std::nearbyint(xv[size_t(i)] * id) * d;
  }
  std::vector<float> want(size_t(n * m));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t r = 0; r < m; ++r) {
      double acc = 0;
      for (int64_t i = 0; i < k; ++i) {
        const size_t e = size_t(r * k + i), xi = size_t(j * k + i);
        acc += exact_min ? double(wv[e] - mv[e]) * xq[xi] + double(mv[e]) * xv[xi] : double(wv[e]) * xq[xi];
      }
      want[size_t(j * m + r)] = float(acc);
    }
  return want;
}

// Random x with a zero value and a group of all zeros (no scale) in each token's row.
std::vector<float> int8_test_x(int64_t n, int64_t k, std::mt19937& rng) {
  std::vector<float> xv = random_values(size_t(n * k), 1.f, rng);
  for (int64_t j = 0; j < n; ++j) {
    xv[size_t(j * k + 5)] = 0.f;
    std::fill(xv.begin() + long(j * k + 32), xv.begin() + long(j * k + 64), 0.f);
  }
  return xv;
}

TEST_F(GpuQuant, Int8ActivationsMatchAHostReference) {
  CudaOptions o;
  o.packed_int8_acts = true;
  auto gpu = make_cuda_backend(o);
  std::mt19937 rng(9);
  for (DType t : kFormats) {
    if (!int8_x_format(t)) continue;
    for (int64_t k : row_lengths(t)) {
      const int64_t m = 301;
      HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
      const std::vector<float> xv = int8_test_x(1, k, rng);
      const std::vector<float> want = int8_reference(t, w, m, k, xv, 1);
      auto wg = gpu->upload(w.t);
      Tensor xg = make_tensor(*gpu, 1, k, xv), og = gpu->alloc(1, m);
      poison(og);
      gpu->matmul(xg, *wg, nullptr, og);
      report("int8 x " + fmt(t) + " k=" + std::to_string(k), rel_err(read(*gpu, og), want), 3e-3);
      gpu->free(xg), gpu->free(og);
    }
  }
}

TEST_F(GpuQuant, BatchedGemmEveryFormat) {
  // Token tiles of 16 and 32 with partial last tiles, several token tiles, k split over blocks
  // (the long rows) or not, m not a multiple of the 64-row tile, and the accumulating form.
  std::mt19937 rng(7);
  for (DType t : kFormats) {
    for (int64_t k : {row_lengths(t)[0], long_row(t)})
      for (int64_t m : {int64_t(72), int64_t(301)}) {
        HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
        auto wg = batched->upload(w.t), wc = exact->upload(w.t);
        for (int64_t n : {9, 16, 33, 100, 256}) {
          const auto xv = random_values(size_t(n * k), 1.f, rng), rv = random_values(size_t(n * m), 1.f, rng);
          Tensor xg = make_tensor(*batched, n, k, xv), xc = make_tensor(*exact, n, k, xv);
          Tensor og = make_tensor(*batched, n, m, rv), oc = make_tensor(*exact, n, m, rv);
          Tensor tg = batched->alloc(n, m), tc = exact->alloc(n, m);
          const bool add = n % 2 == 0;
          if (add) {
            batched->matmul_add(xg, *wg, tg, og);
            exact->matmul_add(xc, *wc, tc, oc);
          } else {
            poison(og);
            batched->matmul(xg, *wg, nullptr, og);
            exact->matmul(xc, *wc, nullptr, oc);
          }
          report("batched packed " + std::string(add ? "matmul_add " : "matmul ") + fmt(t) + " n=" + std::to_string(n) +
                     " m=" + std::to_string(m) + " k=" + std::to_string(k),
                 rel_err(read(*batched, og), read(*exact, oc)), kBf16Tol);
          for (Tensor x : {xg, og, tg}) batched->free(x);
          for (Tensor x : {xc, oc, tc}) exact->free(x);
        }
      }
  }
}

TEST_F(GpuQuant, ManyTokensInSeveralSlices) {
  // Past the GEMV's token limit the rows of a packed weight are dequantized a slice at a time
  // into the workspace (CudaBackend::weight_gemm, at most kDequantValues = 32 M values a slice)
  // for cuBLASLt: 8200 rows of 4096 values take a slice of 8192 rows and one of 8, so rows past
  // the first slice must be read from their own place in the planes.
  std::mt19937 rng(6);
  const int64_t m = 8200, k = 4096, n = 40;
  for (DType t : {DType::F8_B64, DType::I4_G128}) {
    HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
    auto wg = sliced->upload(w.t), wc = exact->upload(w.t);
    const auto xv = random_values(size_t(n * k), 1.f, rng);
    Tensor xg = make_tensor(*sliced, n, k, xv), xc = make_tensor(*exact, n, k, xv);
    Tensor og = sliced->alloc(n, m), oc = exact->alloc(n, m);
    poison(og);
    sliced->matmul(xg, *wg, nullptr, og);
    exact->matmul(xc, *wc, nullptr, oc);
    report("packed matmul in slices " + fmt(t) + " n=40 m=8200 k=4096", rel_err(read(*sliced, og), read(*exact, oc)),
           kBf16Tol);
    sliced->free(xg), sliced->free(og), exact->free(xc), exact->free(oc);
  }
}

// One decode layer's fused ops over packed weights of format t (the o/down projection in `res`):
// norm + q/k/v targets, matmul_add_norm (the split norm) into normed_swiglu, and the residual
// add of the down projection, for each token count of ns; every output compared with the CPU.
// dims: (dim, ffn), or layer_dims' when 0; tol: layer_tol's when 0.
void check_layer(Backend& gpu, Backend& cpu, DType t, DType res, const std::vector<int64_t>& ns, std::mt19937& rng,
                 std::pair<int64_t, int64_t> dims = {0, 0}, double tol = 0) {
  const auto [dim, ffn] = dims.first > 0 ? dims : layer_dims(t, res);
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
  std::vector<std::unique_ptr<Weight>> up[2];  // per backend: norm1, norm2, then the 7 matrices
  for (int which = 0; which < 2; ++which) {
    Backend& b = which == 0 ? gpu : cpu;
    up[which].push_back(b.upload(norm1.t));
    up[which].push_back(b.upload(norm2.t));
    for (const HostWeight& hw : w) up[which].push_back(b.upload(hw.t));
  }
  for (int64_t n : ns) {
    const auto xv = random_values(size_t(n * dim), 2.f, rng);
    std::vector<std::vector<float>> outs[2];
    for (int which = 0; which < 2; ++which) {
      Backend& b = which == 0 ? gpu : cpu;
      const auto& u = up[which];
      Tensor x = make_tensor(b, n, dim, xv), h = b.alloc(n, dim), q = b.alloc(n, dim);
      Tensor kk = b.alloc(n, shapes[1][0]), v = b.alloc(n, shapes[2][0]);
      Tensor g = b.alloc(n, ffn), f = b.alloc(n, ffn), tmp = b.alloc(n, dim);
      const Backend::NormedRows in1 = b.norm(x, *u[0], 1e-5f, h);
      b.normed_matmul(in1, {{u[2].get(), nullptr, q}, {u[3].get(), nullptr, kk}, {u[4].get(), nullptr, v}});
      const Backend::NormedRows in2 = b.matmul_add_norm(q, *u[5], x, *u[1], 1e-5f, h);
      b.normed_swiglu(in2, *u[6], *u[7], g, f);
      b.matmul_add(f, *u[8], tmp, x);
      for (Tensor o : {q, kk, v, f, x}) outs[which].push_back(read(b, o));
      for (Tensor o : {x, h, q, kk, v, g, f, tmp}) b.free(o);
    }
    const char* names[] = {"q", "k", "v", "swiglu", "residual"};
    for (size_t i = 0; i < outs[0].size(); ++i)
      report("layer " + fmt(t) + "/" + fmt(res) + " n=" + std::to_string(n) + " " + names[i],
             rel_err(outs[0][i], outs[1][i]), tol > 0 ? tol : layer_tol(t, res, n));
  }
}

TEST_F(GpuQuant, FusedDecodeOps) {
  std::mt19937 rng(3);
  for (DType t : kFormats) check_layer(*packed, *exact, t, t, {1, 3, 8, 11, 17, 32}, rng);  // token tiles 1, 2, 4
}

// Split-K of the int8 dot products (CudaOptions::packed_split_k_min): a residual GEMV's k over 2
// blocks a row tile, the parts added in order by the last to arrive. Against the same host model
// (parts end inside a chunk at these k), then a decode layer whose o and down projections split.
TEST_F(GpuQuant, SplitKInt8DotProducts) {
  CudaOptions o;
  o.packed_split_k_min = 1;
  auto gpu = make_cuda_backend(o);
  std::mt19937 rng(12);
  for (DType t : kFormats) {
    if (!int8_x_format(t)) continue;
    for (int64_t k : row_lengths(t)) {
      const int64_t m = 301;
      HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
      const std::vector<float> xv = int8_test_x(1, k, rng), rv = random_values(size_t(m), 1.f, rng);
      std::vector<float> want = int8_reference(t, w, m, k, xv, 1);
      for (int64_t r = 0; r < m; ++r) want[size_t(r)] = bf16_to_float(float_to_bf16(want[size_t(r)])) + rv[size_t(r)];
      auto wg = gpu->upload(w.t);
      Tensor xg = make_tensor(*gpu, 1, k, xv), og = make_tensor(*gpu, 1, m, rv), tg = gpu->alloc(1, m);
      gpu->matmul_add(xg, *wg, tg, og);
      report("split-k int8 x matmul_add " + fmt(t) + " k=" + std::to_string(k), rel_err(read(*gpu, og), want), 4e-3);
      gpu->free(xg), gpu->free(og), gpu->free(tg);
    }
    check_layer(*gpu, *exact, t, t, {1}, rng);
  }
}

TEST_F(GpuQuant, BatchedLayerOps) {
  // Past the GEMV's token limit the fused ops fall back to the plain ones over the batched GEMM.
  std::mt19937 rng(8);
  for (DType t : kFormats) check_layer(*batched, *exact, t, t, {9, 24, 40}, rng);
}

// The int8 GEMM (gemm_int8.h) against the same host model: token tiles of 16, 32 and 64 with
// partial last tiles, one and two slabs, k split over blocks (4224 = 33 chunks, 4352 = 17
// super-blocks) or not (640, 768),
// m not a multiple of the row tile, the accumulating form; and with the bf16-activation
// reference's bound, a decode layer's ops over it.
TEST_F(GpuQuant, Int8GemmMatchesAHostReference) {
  CudaOptions o;
  o.packed_gemv_max_tokens = 8;  // 9-64 tokens through the int8 GEMM
  o.int8_gemm_max_tokens = 64;
  auto gpu = make_cuda_backend(o);
  std::mt19937 rng(11);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K}) {
    const bool kq = block_elems(t) == 256;
    for (int64_t k : {kq ? int64_t(768) : int64_t(640), kq ? int64_t(4352) : int64_t(4224)})
      for (int64_t m : {int64_t(72), int64_t(301)}) {
        HostWeight w(t, {m, k}, random_floats(size_t(m * k), 0.5f, rng));
        auto wg = gpu->upload(w.t);
        for (int64_t n : {9, 16, 24, 33, 64}) {
          const std::vector<float> xv = int8_test_x(n, k, rng), rv = random_values(size_t(n * m), 1.f, rng);
          std::vector<float> want = int8_reference(t, w, m, k, xv, n, t != DType::Q4_0);
          Tensor xg = make_tensor(*gpu, n, k, xv), og = make_tensor(*gpu, n, m, rv), tg = gpu->alloc(n, m);
          const bool add = n % 2 == 0;
          if (add) {
            gpu->matmul_add(xg, *wg, tg, og);
            for (size_t i = 0; i < want.size(); ++i) want[i] = bf16_to_float(float_to_bf16(want[i])) + rv[i];
          } else {
            poison(og);
            gpu->matmul(xg, *wg, nullptr, og);
          }
          report("int8 gemm " + std::string(add ? "matmul_add " : "matmul ") + fmt(t) + " n=" + std::to_string(n) +
                     " m=" + std::to_string(m) + " k=" + std::to_string(k),
                 rel_err(read(*gpu, og), want), 3e-3);
          for (Tensor x : {xg, og, tg}) gpu->free(x);
        }
      }
    check_layer(*gpu, *exact, t, t, {9, 24, 40, 64}, rng,
                kq ? std::pair<int64_t, int64_t>{512, 1536} : std::pair<int64_t, int64_t>{640, 1664}, 4e-2);
  }
}

TEST_F(GpuQuant, MixedFormatsInOneLayer) {
  // As a Q4_K_M file mixes them: Q4_K projections with Q6_K output/down projections, and
  // 32-value formats next to each other; an int4 model quantized on load keeps I4_G32 where 128
  // does not divide a row; FP8 next to int4.
  std::mt19937 rng(4);
  const DType pairs[][2] = {{DType::Q4_K, DType::Q6_K},
                            {DType::Q5_0, DType::Q8_0},
                            {DType::I4_G128, DType::I4_G32},
                            {DType::F8_B64, DType::I4_G128}};
  for (const auto& p : pairs) check_layer(*packed, *exact, p[0], p[1], {1, 3}, rng);
}

TEST_F(GpuQuant, PackedAndConvertedUploadsAgree) {
  // The same file through both CUDA upload paths: packed planes read by the GEMV, and the bf16
  // conversion (CudaOptions::packed_weights = false), which dequantizes in fp32.
  CudaOptions o;
  o.packed_weights = false;
  auto converted = make_cuda_backend(o);
  std::mt19937 rng(5);
  for (DType t : kFormats) {
    const int64_t m = 130, k = block_elems(t) == 32 ? 992 : 1024, n = 4;
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
