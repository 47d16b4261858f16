// Does greta's FP8 W8A8 kernel for decode batches (gemm_w8a8.cu) stream the weights faster than
// cuBLASLt's FP8 GEMM (LtGemm::run_fp8) at 8-64 tokens, and how close to the copy bandwidth?
//
// Why ask: a batch-32 step of FP8 Llama-2-7B took ~5.7 ms on an H100 on cuBLASLt where its
// weights stream in ~2.4 ms; cuBLASLt read an 11008 x 4096 weight at ~54% of copy at 64 tokens
// (docs/notes/fp8-gemm.md).
//
// The engine's FP8 launches of a Llama-2-7B layer (q, k, v and o 4096 x 4096, gate and up 11008
// x 4096, down 4096 x 11008: one GEMM a weight), 32 layers of distinct weights (6.5 GB of e4m3),
// the whole chain as one graph (224 launches; with segments, q/k/v and gate/up each one launch:
// 128), all variants on the same quantized activations (the engine's quantize_tokens_e4m3) and
// row scales. Variants: the kernel with the engine's plan, with segments, with other plans
// (W8A8Tuning), and cuBLASLt. Each kernel variant's output of every shape's first layer is
// compared with cuBLASLt's (both accumulate the same e4m3 products in fp32, in different orders).
// Prints JSON lines
// (card, variant, n, bytes, us, GB/s, % of the copy bandwidth measured in the same run, check)
// and a table on stderr.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm_w8a8.h"
#include "backend/cuda/matmul_lt.h"
#include "gpu_bench_timing.h"
#include "packed_chain.cuh"

namespace greta::cuda {
namespace {

struct Shape {
  const char* name;
  int64_t m, k;
};
constexpr Shape kShapes[] = {{"q", 4096, 4096},     {"k", 4096, 4096},   {"v", 4096, 4096},    {"o", 4096, 4096},
                             {"gate", 11008, 4096}, {"up", 11008, 4096}, {"down", 4096, 11008}};
constexpr int kLayers = 32;
constexpr int kTokens[] = {8, 16, 32, 64};
constexpr double kCheckBound = 5e-3;  // relative L2 difference of the two variants' outputs

// e4m3 bytes with the top exponent bit cleared: finite values of magnitude < 2 (random bytes
// would include NaN codes).
__global__ void finite_e4m3(uint8_t* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] &= 0xBF;
}
__global__ void fill_row_scales(float* s, int64_t m) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < m; r += int64_t(gridDim.x) * blockDim.x)
    s[r] = 0.01f * (1.f + float(r % 7) / 7.f);
}

int run() {
  const BenchDevice dev = bench_device();
  cudaStream_t s = dev.stream;
  const double copy_gbs = copy_bandwidth_gbs(s);
  std::fprintf(stderr, "%s: copy bandwidth %.0f GB/s\n", dev.name.c_str(), copy_gbs);

  std::vector<std::vector<uint8_t*>> w(std::size(kShapes), std::vector<uint8_t*>(kLayers));
  size_t chain_bytes = 0;
  int64_t max_m = 0, max_k = 0;
  for (size_t si = 0; si < std::size(kShapes); ++si) {
    const Shape& sh = kShapes[si];
    max_m = std::max(max_m, sh.m);
    max_k = std::max(max_k, sh.k);
    const size_t bytes = size_t(sh.m * sh.k);
    for (int l = 0; l < kLayers; ++l) {
      GRETA_CUDA_CHECK(cudaMalloc(&w[si][size_t(l)], bytes));
      packed_chain::fill_bytes<<<1024, 256, 0, s>>>(w[si][size_t(l)], bytes, uint32_t(97 * si + size_t(l)));
      finite_e4m3<<<1024, 256, 0, s>>>(w[si][size_t(l)], bytes);
      chain_bytes += bytes + size_t(sh.m) * 4;  // + the row scales
    }
  }
  const int max_n = kTokens[std::size(kTokens) - 1];
  float *w_scale = nullptr, *scratch = nullptr;
  int32_t* counters = nullptr;
  bf16 *x = nullptr, *out_w8a8 = nullptr, *out_lt = nullptr;  // out_w8a8 holds 3 segments' outputs
  uint8_t* xq[2] = {};                                        // k = 4096, k = 11008
  float* xs[2] = {};
  GRETA_CUDA_CHECK(cudaMalloc(&w_scale, size_t(max_m) * 4));
  GRETA_CUDA_CHECK(cudaMalloc(&x, size_t(max_n * max_k) * 2));
  GRETA_CUDA_CHECK(cudaMalloc(&out_w8a8, size_t(max_n * max_m) * 2 * 3));
  GRETA_CUDA_CHECK(cudaMalloc(&out_lt, size_t(max_n * max_m) * 2));
  for (int j = 0; j < 2; ++j) {
    GRETA_CUDA_CHECK(cudaMalloc(&xq[j], size_t(max_n * max_k)));
    GRETA_CUDA_CHECK(cudaMalloc(&xs[j], size_t(max_n) * 4));
  }
  fill_row_scales<<<64, 256, 0, s>>>(w_scale, max_m);
  packed_chain::fill_x<<<256, 256, 0, s>>>(x, int64_t(max_n) * max_k);
  GRETA_CUDA_CHECK(cudaGetLastError());
  LtGemm lt;
  int fails = 0;
  std::vector<std::string> table;
  for (const int n : kTokens) {
    for (int j = 0; j < 2; ++j) quantize_tokens_e4m3(x, n, j == 0 ? 4096 : 11008, xq[j], xs[j], s);
    std::vector<W8A8GemmPlan> plans;
    size_t scratch_floats = 0, n_counters = 0;
    auto need = [&](const W8A8GemmPlan& p) {
      scratch_floats = std::max(scratch_floats, w8a8_gemm_scratch_floats(p));
      n_counters = std::max(n_counters, w8a8_gemm_counters(p));
      return p;
    };
    const int sms = dev.prop.multiProcessorCount;
    for (const Shape& sh : kShapes) plans.push_back(need(w8a8_gemm_plan(n, {sh.m}, sh.k, sms)));
    // Other plans, one weight a launch: one slab a warp; fewer or more blocks an SM (fewer or
    // more k parts); longer parts.
    struct Variant {
      const char* name;
      W8A8Tuning tune;
      std::vector<W8A8GemmPlan> plans;
    };
    std::vector<Variant> variants = {{"w8a8_rs1", {3, 8, 1}, {}},
                                     {"w8a8_b2", {2, 8, 0}, {}},
                                     {"w8a8_b6", {6, 8, 0}, {}},
                                     {"w8a8_c16", {3, 16, 0}, {}}};
    for (Variant& v : variants)
      for (const Shape& sh : kShapes) v.plans.push_back(need(w8a8_gemm_plan(n, {sh.m}, sh.k, sms, v.tune)));
    // Segments: q, k, v in one launch, gate and up in another (as the engine launches them).
    const W8A8GemmPlan plan_qkv = need(w8a8_gemm_plan(n, {4096, 4096, 4096}, 4096, sms));
    const W8A8GemmPlan plan_gu = need(w8a8_gemm_plan(n, {11008, 11008}, 4096, sms));
    GRETA_CUDA_CHECK(cudaFree(scratch));
    GRETA_CUDA_CHECK(cudaFree(counters));
    GRETA_CUDA_CHECK(cudaMalloc(&scratch, std::max<size_t>(scratch_floats, 1) * 4));
    GRETA_CUDA_CHECK(cudaMalloc(&counters, std::max<size_t>(n_counters, 1) * 4));
    GRETA_CUDA_CHECK(cudaMemsetAsync(counters, 0, std::max<size_t>(n_counters, 1) * 4, s));
    auto seg = [&](size_t si, int l, bf16* out) {
      return W8A8Seg{w[si][size_t(l)], w_scale, nullptr, out, kShapes[si].m};
    };
    auto args = [&](int j) {
      W8A8GemmArgs a;
      a.xq = xq[j];
      a.x_scale = xs[j];
      a.scratch = scratch;
      a.counters = counters;
      a.k = j == 0 ? 4096 : 11008;
      a.n = n;
      return a;
    };
    auto one = [&](bool ours, size_t si, int l, bf16* out, const std::vector<W8A8GemmPlan>* with = nullptr) {
      const Shape& sh = kShapes[si];
      const int j = sh.k == 4096 ? 0 : 1;
      if (ours) {
        W8A8GemmArgs a = args(j);
        a.seg0 = seg(si, l, out);
        w8a8_gemm(a, (with ? *with : plans)[si], s);
      } else {
        lt.run_fp8(xq[j], xs[j], w[si][size_t(l)], w_scale, out, n, sh.m, sh.k, false, s);
      }
    };
    // Layer l as the engine launches it with segments: launch i of 4 (q/k/v, o, gate/up, down).
    // Each segment writes its own part of out (the outputs are scratch here).
    auto segmented = [&](int i, int l, bf16* out) {
      W8A8GemmArgs a = args(i == 3 ? 1 : 0);
      if (i == 0) {
        a.seg0 = seg(0, l, out);
        a.seg1 = seg(1, l, out + size_t(n) * 4096);
        a.seg2 = seg(2, l, out + size_t(n) * 8192);
        w8a8_gemm(a, plan_qkv, s);
      } else if (i == 2) {
        a.seg0 = seg(4, l, out);
        a.seg1 = seg(5, l, out + size_t(n) * 11008);
        w8a8_gemm(a, plan_gu, s);
      } else {
        a.seg0 = seg(i == 1 ? 3 : 6, l, out);
        w8a8_gemm(a, plans[i == 1 ? 3 : 6], s);
      }
    };
    // The checks against cuBLASLt: every shape's first layer with a set of plans; the segmented
    // q/k/v launch by its k segment.
    auto diff_of = [&](const std::vector<W8A8GemmPlan>& with) {
      double d = 0;
      for (size_t si = 0; si < std::size(kShapes); ++si) {
        one(true, si, 0, out_w8a8, &with);
        one(false, si, 0, out_lt);
        GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
        d = std::max(d, packed_chain::rel_diff(out_w8a8, out_lt, size_t(n) * size_t(kShapes[si].m)));
      }
      return d;
    };
    auto diff_of_segments = [&] {
      segmented(0, 0, out_w8a8);
      one(false, 1, 0, out_lt);
      GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
      return packed_chain::rel_diff(out_w8a8 + size_t(n) * 4096, out_lt, size_t(n) * 4096);
    };
    const int per = int(std::size(kShapes)) * kLayers;
    auto record = [&](const char* variant, double ms, int launches, double diff) {
      const bool ok = diff < kCheckBound;
      fails += !ok;
      const double us = ms * 1e3 * launches;  // the whole chain
      const double gbs = double(chain_bytes) / us / 1e3;
      std::printf(
          "{\"bench\":\"w8a8_gemm\",\"device\":\"%s\",\"variant\":\"%s\",\"n\":%d,\"launches\":%d,\"chain_bytes\":%zu,"
          "\"us\":%.1f,\"gb_s\":%.1f,\"copy_gb_s\":%.1f,\"pct_of_copy\":%.1f,\"rel_diff_vs_other\":%.3g,\"check\":\"%"
          "s\"}\n",
          dev.name.c_str(), variant, n, launches, chain_bytes, us, gbs, copy_gbs, 100.0 * gbs / copy_gbs, diff,
          ok ? "pass" : "FAIL");
      char line[160];
      std::snprintf(line, sizeof line, "%-9s n=%-3d %9.1f us  %6.1f GB/s  %5.1f%% of copy  diff %.2g %s", variant, n,
                    us, gbs, 100.0 * gbs / copy_gbs, diff, ok ? "pass" : "FAIL");
      table.push_back(line);
    };
    const double diff = diff_of(plans);
    for (const bool ours : {true, false}) {
      const double ms = median_graph_ms(
          [&](int i) {
            one(ours, size_t(i) % std::size(kShapes), i / int(std::size(kShapes)), ours ? out_w8a8 : out_lt);
          },
          s, 10, per);
      record(ours ? "w8a8" : "cublaslt", ms, per, diff);
    }
    const double seg_diff = diff_of_segments();
    const double ms = median_graph_ms([&](int i) { segmented(i % 4, i / 4, out_w8a8); }, s, 10, 4 * kLayers);
    record("w8a8_seg", ms, 4 * kLayers, seg_diff);
    for (const Variant& v : variants) {
      const double vd = diff_of(v.plans);
      const double vms = median_graph_ms(
          [&](int i) { one(true, size_t(i) % std::size(kShapes), i / int(std::size(kShapes)), out_w8a8, &v.plans); }, s,
          10, per);
      record(v.name, vms, per, vd);
    }
  }
  for (const std::string& l : table) std::fprintf(stderr, "%s\n", l.c_str());
  return fails ? 1 : 0;
}

}  // namespace
}  // namespace greta::cuda

int main() {
  try {
    return greta::cuda::run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_w8a8_gemm_bench: %s\n", e.what());
    return 2;
  }
}
