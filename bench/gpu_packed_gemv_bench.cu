// Does the single-token packed GEMV gain from int8 activations and dp4a dot products
// (gemv_dot.cuh) over dequantizing to bf16 for the tensor cores (gemv_weights.cuh WeightQuant)?
//
// Why ask: the packed GEMV runs at 40-68% of copy bandwidth where bf16 runs at 84-98%; Nsight
// Compute shows it latency-bound at low occupancy with the issue slots 30-52% busy: ~2
// instructions a value go to unpacking, offset and scale before the mma, whose eight token
// columns carry one token at batch 1. The dot-product form spends ~0.7 a value and holds only the
// raw granules, so more chunks can be in flight a lane. (Staging the weights in shared memory
// with bulk copies was measured here before and lost everywhere: docs/notes/quantized-weights.md.)
//
// Variants, each a graph of GEMVs at batch 1 over the Llama-2-7B shapes (q/k/v 12288 x 4096,
// o 4096 x 4096, gate/up 22016 x 4096, down 4096 x 11008), 32 layers of distinct weights:
//   prod          the engine's packed GEMV with bf16 x (gemv_fused, pipelined PDL launch)
//   int8x         the engine's packed GEMV with int8 x (GemvArgs::int8_x)
//   dot_uN        the same kernel with N chunks in flight a lane
//   int8x_split   int8x with k split over 2 blocks a row tile for the 4096-row shapes (o, down), as
//                 CudaOptions::packed_split_k_min does in the engine
// per shape (32 launches of that shape) and for the whole chain (128 launches a step). Every
// variant's output is compared with prod's (same dequantized values, another summation order,
// and for the int8 variants x's own rounding).
// Prints JSON lines (card, format, shape, bytes, us, GB/s, % of the copy bandwidth measured in the
// same run, check) and a table on stderr.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemv_kernel.cuh"
#include "backend/cuda/quant_planes.h"
#include "gpu_bench_timing.h"
#include "packed_chain.cuh"

namespace greta::cuda {
namespace {

// The engine's packed GEMV (gemv_fused, pipelined PDL launch); int8_x: int8 activations and dp4a.
void launch_engine(DType t, int int8_x, const void* w, const bf16* x, bf16* out, int64_t m, int64_t k, cudaStream_t s) {
  GemvArgs a = single(x, static_cast<const bf16*>(w), nullptr, out, 1, m, k);
  a.wfmt = int32_t(t);
  a.pipeline = 1;
  a.int8_x = int8_x;
  gemv_fused(a, 0.f, s);
}
// The int8 dot-product kernel with another number of chunks in flight a lane.
template <DType T, int UNROLL>
void launch_dot(const void* w, const bf16* x, bf16* out, int64_t m, int64_t k, cudaStream_t s) {
  GemvArgs a = single(x, static_cast<const bf16*>(w), nullptr, out, 1, m, k);
  a.wfmt = int32_t(T);
  launch_mma<UNROLL, kLaunchPipe, kWarps, kNormNone, kEpiStore, 1, 1, WeightDot<T>>(a, s);
}

// int8x_split's partial sums and arrival counts (zero between launches), for m up to 4096.
struct SplitScratch {
  float* partials = nullptr;
  int32_t* counts = nullptr;
};
SplitScratch g_split;
template <DType T>
void launch_split(const void* w, const bf16* x, bf16* out, int64_t m, int64_t k, cudaStream_t s) {
  GemvArgs a = single(x, static_cast<const bf16*>(w), nullptr, out, 1, m, k);
  a.wfmt = int32_t(T);
  a.pipeline = 1;
  a.int8_x = 1;
  if (m <= 4096) {  // 256 row tiles, ~2 blocks an SM: the shapes the engine splits
    a.split = 2;
    a.split_scratch = g_split.partials;
    a.split_count = g_split.counts;
  }
  gemv_fused(a, 0.f, s);
}

using Launch = void (*)(const void*, const bf16*, bf16*, int64_t, int64_t, cudaStream_t);
struct Variant {
  const char* name;
  int engine;  // -1: run; else the engine's kernel with this int8_x
  Launch run;
};

template <DType T>
std::vector<Variant> variants() {
  std::vector<Variant> v = {{"prod", 0, nullptr}};
  if constexpr (int8_dot_format(T)) {
    v.push_back({"int8x", 1, nullptr});
    v.push_back({"dot_u1", -1, &launch_dot<T, 1>});
    v.push_back({"dot_u2", -1, &launch_dot<T, 2>});
    v.push_back({"dot_u4", -1, &launch_dot<T, 4>});
    v.push_back({"int8x_split", -1, &launch_split<T>});
  }
  return v;
}

using packed_chain::kLayers;
using packed_chain::kShapes;
using packed_chain::Shape;

template <DType T>
bool run_format(const BenchDevice& bd, double copy_gbs) {
  cudaStream_t st = bd.stream;
  const std::string fmt(dtype_name(T));
  const packed_chain::Weights w(T, st);
  bf16 *x = nullptr, *out = nullptr, *ref = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&x, 11008 * sizeof(bf16)));
  GRETA_CUDA_CHECK(cudaMalloc(&out, 22016 * sizeof(bf16)));
  GRETA_CUDA_CHECK(cudaMalloc(&ref, 22016 * sizeof(bf16)));
  packed_chain::fill_x<<<64, 256, 0, st>>>(x, 11008);
  GRETA_CUDA_CHECK(cudaGetLastError());
  bool ok = true;
  const auto vs = variants<T>();
  auto launch = [&](const Variant& v, int si, int l, bf16* o) {
    const Shape& sh = kShapes[si];
    if (v.run) v.run(w.at(si, l), x, o, sh.m, sh.k, st);
    else launch_engine(T, v.engine, w.at(si, l), x, o, sh.m, sh.k, st);
  };
  std::vector<std::vector<double>> pct(vs.size(), std::vector<double>(5));
  for (size_t vi = 0; vi < vs.size(); ++vi) {
    const Variant& v = vs[vi];
    // Check: layer 0 of each shape against prod.
    double worst = 0;
    for (int si = 0; si < 4; ++si) {
      launch(vs[0], si, 0, ref);
      launch(v, si, 0, out);
      GRETA_CUDA_CHECK(cudaStreamSynchronize(st));
      worst = std::max(worst, packed_chain::rel_diff(out, ref, size_t(kShapes[si].m)));
    }
    // Same dequantized values as prod, another summation order; int8 activations add their own
    // rounding (~0.4% of a dot product with these x).
    const bool good = worst < (v.engine == 0 ? 5e-3 : 1e-2);
    ok = ok && good;
    for (int si = 0; si <= 4; ++si) {  // 4: the whole chain
      size_t bytes = 0;
      for (int s2 = 0; s2 < 4; ++s2)
        if (si == 4 || s2 == si) bytes += quant_planes(T, kShapes[s2].m, kShapes[s2].k).total * kLayers;
      const int per = si == 4 ? 4 * kLayers : kLayers;
      const double ms = median_graph_ms(
          [&](int i) {
            if (si == 4) launch(v, i % 4, i / 4, out);
            else launch(v, si, i, out);
          },
          st, 20, per);
      const double us = ms * 1e3, gbs = double(bytes) / per / (ms * 1e6);
      pct[vi][size_t(si)] = 100.0 * gbs / copy_gbs;
      std::printf(
          "{\"bench\":\"packed_gemv\",\"device\":\"%s\",\"format\":\"%s\",\"variant\":\"%s\",\"shape\":\"%s\","
          "\"bytes\":%zu,\"us\":%.2f,\"GBps\":%.1f,\"pct_of_copy\":%.2f,\"copy_GBps\":%.1f,\"rel_diff_vs_prod\":%.3g,"
          "\"check\":\"%s\"}\n",
          bd.name.c_str(), fmt.c_str(), v.name, si == 4 ? "chain" : kShapes[si].name, bytes / per, us, gbs,
          pct[vi][size_t(si)], copy_gbs, worst, good ? "pass" : "FAIL");
      std::fflush(stdout);
    }
  }
  std::fprintf(stderr, "%s %s, %% of copy (%.0f GB/s), batch 1:\n  %-12s %7s %7s %7s %7s %7s\n", bd.name.c_str(),
               fmt.c_str(), copy_gbs, "variant", "qkv", "o", "gate_up", "down", "chain");
  for (size_t vi = 0; vi < vs.size(); ++vi)
    std::fprintf(stderr, "  %-12s %7.1f %7.1f %7.1f %7.1f %7.1f\n", vs[vi].name, pct[vi][0], pct[vi][1], pct[vi][2],
                 pct[vi][3], pct[vi][4]);
  GRETA_CUDA_CHECK(cudaFree(x));
  GRETA_CUDA_CHECK(cudaFree(out));
  GRETA_CUDA_CHECK(cudaFree(ref));
  return ok;
}

}  // namespace
}  // namespace greta::cuda

int main() {
  using namespace greta::cuda;
  try {
    const BenchDevice bd = bench_device();
    const double copy_gbs = copy_bandwidth_gbs(bd.stream);
    GRETA_CUDA_CHECK(cudaMalloc(&g_split.partials, gemv_split_scratch_floats(4096, 1) * sizeof(float)));
    GRETA_CUDA_CHECK(cudaMalloc(&g_split.counts, gemv_split_counters(4096) * sizeof(int32_t)));
    GRETA_CUDA_CHECK(cudaMemset(g_split.counts, 0, gemv_split_counters(4096) * sizeof(int32_t)));
    bool ok = run_format<greta::DType::Q4_0>(bd, copy_gbs);
    ok = run_format<greta::DType::Q4_K>(bd, copy_gbs) && ok;
    ok = run_format<greta::DType::Q6_K>(bd, copy_gbs) && ok;
    ok = run_format<greta::DType::Q8_0>(bd, copy_gbs) && ok;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_packed_gemv_bench: %s\n", e.what());
    return 2;
  }
}
