// Where does the batched packed GEMM stand against the weight stream and the tensor cores, for
// 16-128 tokens, and against the decode GEMV that takes up to 32 tokens? And does staging its
// weights in shared memory (gemm_packed_staged.cuh) beat the engine's kernel, which loads them
// into registers a chunk ahead?
//
// Why ask: a batch-32 decode step of 4-bit Llama-2-7B ran ~6.5 ms on an H100 where its weights
// stream in ~1.3 ms, and the GEMM lost to the GEMV at 32 tokens; adding tokens cost more time
// than the weights did (docs/notes/quantized-weights.md, "Batched steps").
//
// Variants over the Llama-2-7B shapes (q/k/v 12288 x 4096, o 4096 x 4096, gate/up 22016 x 4096,
// down 4096 x 11008), 32 layers of distinct weights, the whole chain (128 launches) as one graph:
//   engine        the engine's packed GEMM (gemm_packed.cu, packed_gemm)
//   sS            the staged kernel, S chunks ahead; the engine's plan
//   gemv          the engine's decode GEMV with n tokens (n <= 32)
//   int8*         the int8 GEMM (gemm_int8.cu; 32-value block formats, n <= 64) with x quantized
//                 to int8 per 32 values in the same launch sequence: int8 its default plan,
//                 int8_rs1 one slab a warp, int8_b2 / int8_b4 2 / 4 blocks an SM, int8_c8 parts
//                 of at least 8 chunks
// Every GEMM variant's output is compared with the engine's (same dequantized values, another
// summation order), the GEMV's too (its bf16x2 scale math rounds differently), the int8 GEMM's
// too (x's int8 rounding, ~1/254 of a group's largest value). Prints JSON lines
// (card, format, n, bytes, us, GB/s of weights, TFLOP/s, % of the copy bandwidth measured in the
// same run, check) and a table on stderr. Arguments: the formats to run (default all).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm_int8.h"
#include "backend/cuda/gemm_packed.h"
#include "backend/cuda/gemv_kernel.cuh"
#include "backend/cuda/quant_planes.h"
#include "gemm_packed_staged.cuh"
#include "gpu_bench_timing.h"
#include "packed_chain.cuh"

namespace greta::cuda {
namespace {

using packed_chain::kLayers;
using packed_chain::kShapes;
using packed_chain::Shape;
constexpr int kTokens[] = {16, 32, 64, 128};

using GemmLaunch = void (*)(const PackedGemmArgs&, const PackedGemmPlan&, cudaStream_t);

template <DType T, int STAGES>
void launch_gemm(const PackedGemmArgs& a, const PackedGemmPlan& plan, cudaStream_t s) {
  constexpr int RS = byte_quants(T) ? 1 : 2;
  const dim3 grid(unsigned(plan.token_tiles), unsigned(plan.row_tiles), unsigned(plan.splits));
  if (plan.tile_tokens == 16)
    gemm_packed_kernel<T, 2, RS, STAGES><<<grid, kGemmWarps * 32, gemm_packed_smem<T, 2, RS, STAGES>(), s>>>(a);
  else gemm_packed_kernel<T, 4, RS, STAGES><<<grid, kGemmWarps * 32, gemm_packed_smem<T, 4, RS, STAGES>(), s>>>(a);
  GRETA_CUDA_LAUNCH_CHECK();
}
template <DType T, int STAGES>
void allow_smem() {
  constexpr int RS = byte_quants(T) ? 1 : 2;
  GRETA_CUDA_CHECK(cudaFuncSetAttribute(gemm_packed_kernel<T, 2, RS, STAGES>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        gemm_packed_smem<T, 2, RS, STAGES>()));
  GRETA_CUDA_CHECK(cudaFuncSetAttribute(gemm_packed_kernel<T, 4, RS, STAGES>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        gemm_packed_smem<T, 4, RS, STAGES>()));
}

// The engine's packed GEMM (gemm_packed.cu).
void launch_engine(DType t, const PackedGemmArgs& a, const PackedGemmPlan& plan, cudaStream_t s) {
  packed_gemm(t, a, plan, s);
}

struct Variant {
  std::string name;
  GemmLaunch gemm;  // nullptr: the engine's GEMM (engine_gemm), the int8 GEMM (int8) or the GEMV
  bool engine_gemm = false;
  bool int8 = false;
  Int8GemmTuning tune = {};
};

template <DType T>
std::vector<Variant> variants() {
  allow_smem<T, 4>();
  allow_smem<T, 3>();
  allow_smem<T, 2>();
  std::vector<Variant> v = {{"engine", nullptr, true},
                            {"s4", &launch_gemm<T, 4>},
                            {"s3", &launch_gemm<T, 3>},
                            {"s2", &launch_gemm<T, 2>},
                            {"gemv", nullptr}};
  if (int8_gemm_format(T)) {
    v.push_back({"int8", nullptr, false, true, {}});
    v.push_back({"int8_rs1", nullptr, false, true, {.slabs = 1}});
    v.push_back({"int8_b2", nullptr, false, true, {.blocks_per_sm = 2}});
    v.push_back({"int8_b4", nullptr, false, true, {.blocks_per_sm = 4}});
    v.push_back({"int8_c8", nullptr, false, true, {.min_chunks = 8}});
  }
  return v;
}

template <DType T>
bool run_format(const BenchDevice& bd, double copy_gbs) {
  cudaStream_t st = bd.stream;
  const std::string fmt(dtype_name(T));
  const packed_chain::Weights w(T, st);
  const size_t chain_bytes = w.bytes;
  const double chain_flop_per_token = w.flop_per_token;
  const int max_n = kTokens[std::size(kTokens) - 1];
  bf16 *x = nullptr, *out = nullptr, *ref = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&x, size_t(max_n) * 11008 * sizeof(bf16)));
  GRETA_CUDA_CHECK(cudaMalloc(&out, size_t(max_n) * 22016 * sizeof(bf16)));
  GRETA_CUDA_CHECK(cudaMalloc(&ref, size_t(max_n) * 22016 * sizeof(bf16)));
  packed_chain::fill_x<<<256, 256, 0, st>>>(x, int64_t(max_n) * 11008);
  // Split-K scratch and counters for the largest plan of any shape and token count.
  size_t scratch_floats = 0, counters = 0;
  const auto vs = variants<T>();
  for (int n : kTokens)
    for (const Shape& sh : kShapes) {
      const PackedGemmPlan plan = packed_gemm_plan(T, n, sh.m, sh.k, bd.prop.multiProcessorCount);
      scratch_floats = std::max(scratch_floats, packed_gemm_scratch_floats(plan));
      counters = std::max(counters, packed_gemm_counters(plan));
      if (n > kInt8GemmMaxTokens) continue;
      for (const Variant& v : vs)
        if (v.int8) {
          const Int8GemmPlan ip = int8_gemm_plan(n, sh.m, sh.k, bd.prop.multiProcessorCount, v.tune);
          scratch_floats = std::max(scratch_floats, int8_gemm_scratch_floats(ip));
          counters = std::max(counters, int8_gemm_counters(ip));
        }
    }
  void* acts_buf = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&acts_buf, int8_acts_bytes(kInt8GemmMaxTokens, 11008)));
  float* scratch = nullptr;
  int32_t* count = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&scratch, std::max<size_t>(scratch_floats, 1) * sizeof(float)));
  GRETA_CUDA_CHECK(cudaMalloc(&count, std::max<size_t>(counters, 1) * sizeof(int32_t)));
  GRETA_CUDA_CHECK(cudaMemset(count, 0, std::max<size_t>(counters, 1) * sizeof(int32_t)));
  GRETA_CUDA_CHECK(cudaGetLastError());
  auto launch = [&](const Variant& v, int n, int si, int l, bf16* o) {
    const Shape& sh = kShapes[si];
    void* wp = w.at(si, l);
    if (v.int8) {
      Int8GemmArgs a;
      a.x = int8_acts_at(acts_buf, n, sh.k);
      quantize_int8_acts(T, x, n, sh.k, a.x, st);
      a.w = wp;
      a.out = o;
      a.scratch = scratch;
      a.counters = count;
      a.m = sh.m;
      a.k = sh.k;
      a.n = n;
      int8_gemm(T, a, int8_gemm_plan(n, sh.m, sh.k, bd.prop.multiProcessorCount, v.tune), st);
      return;
    }
    if (!v.gemm && !v.engine_gemm) {
      GemvArgs a = single(x, static_cast<const bf16*>(wp), nullptr, o, n, sh.m, sh.k);
      a.wfmt = int32_t(T);
      a.pipeline = 1;
      gemv_fused(a, 0.f, st);
      return;
    }
    PackedGemmArgs a;
    a.x = x;
    a.w = wp;
    a.out = o;
    a.scratch = scratch;
    a.counters = count;
    a.m = sh.m;
    a.k = sh.k;
    a.n = n;
    const PackedGemmPlan plan = packed_gemm_plan(T, n, sh.m, sh.k, bd.prop.multiProcessorCount);
    a.chunks_per_split = plan.chunks_per_split;
    if (v.engine_gemm) launch_engine(T, a, plan, st);
    else v.gemm(a, plan, st);
  };
  bool ok = true;
  std::fprintf(stderr, "%s %s, chain of 128 GEMMs: us (%% of copy %.0f GB/s, TFLOP/s)\n  %-8s", bd.name.c_str(),
               fmt.c_str(), copy_gbs, "variant");
  for (int n : kTokens) std::fprintf(stderr, " %24s", ("n=" + std::to_string(n)).c_str());
  std::fprintf(stderr, "\n");
  for (const Variant& v : vs) {
    std::fprintf(stderr, "  %-8s", v.name.c_str());
    for (int n : kTokens) {
      const bool gemv = !v.gemm && !v.engine_gemm && !v.int8;
      if ((gemv && n > kGemvMaxTokens) || (v.int8 && n > kInt8GemmMaxTokens)) {
        std::fprintf(stderr, " %24s", "");
        continue;
      }
      double worst = 0;
      for (int si = 0; si < 4; ++si) {  // check: layer 0 of each shape against the first variant
        launch(vs[0], n, si, 0, ref);
        launch(v, n, si, 0, out);
        GRETA_CUDA_CHECK(cudaStreamSynchronize(st));
        worst = std::max(worst, packed_chain::rel_diff(out, ref, size_t(n) * size_t(kShapes[si].m)));
      }
      // Same dequantized values: summation order only; the GEMV's bf16x2 scale math adds ~1e-3.
      const bool good = worst < (v.int8 ? 2e-2 : gemv ? 1e-2 : 2e-3);
      ok = ok && good;
      const double ms = median_graph_ms([&](int i) { launch(v, n, i % 4, i / 4, out); }, st, 10, 4 * kLayers);
      // ms is per launch; the chain is 4 kLayers launches.
      const double us = ms * 1e3 * 4 * kLayers, gbs = double(chain_bytes) / (us * 1e3);
      const double tflops = chain_flop_per_token * n / (us * 1e6);
      std::printf(
          "{\"bench\":\"packed_gemm\",\"device\":\"%s\",\"format\":\"%s\",\"variant\":\"%s\",\"n\":%d,"
          "\"bytes\":%zu,\"us\":%.2f,\"GBps\":%.1f,\"pct_of_copy\":%.2f,\"copy_GBps\":%.1f,\"TFLOPs\":%.1f,"
          "\"rel_diff\":%.3g,\"check\":\"%s\"}\n",
          bd.name.c_str(), fmt.c_str(), v.name.c_str(), n, chain_bytes, us, gbs, 100.0 * gbs / copy_gbs, copy_gbs,
          tflops, worst, good ? "pass" : "FAIL");
      std::fflush(stdout);
      std::fprintf(stderr, " %8.1f (%5.1f%%, %5.1f)%s", us, 100.0 * gbs / copy_gbs, tflops, good ? " " : "!");
    }
    std::fprintf(stderr, "\n");
  }
  for (void* p : {static_cast<void*>(x), static_cast<void*>(out), static_cast<void*>(ref), static_cast<void*>(scratch),
                  static_cast<void*>(count), acts_buf})
    GRETA_CUDA_CHECK(cudaFree(p));
  return ok;
}

}  // namespace
}  // namespace greta::cuda

// Arguments: the formats to run (q4_0 q4_k q8_0 i4_g128 q4_1 q5_0; default all).
int main(int argc, char** argv) {
  using namespace greta::cuda;
  using greta::DType;
  try {
    const BenchDevice bd = bench_device();
    const double copy_gbs = copy_bandwidth_gbs(bd.stream);
    auto wanted = [&](const char* name) {
      if (argc < 2) return true;
      for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == name) return true;
      return false;
    };
    bool ok = true;
    if (wanted("q4_0")) ok = run_format<DType::Q4_0>(bd, copy_gbs) && ok;
    if (wanted("q4_k")) ok = run_format<DType::Q4_K>(bd, copy_gbs) && ok;
    if (wanted("q8_0")) ok = run_format<DType::Q8_0>(bd, copy_gbs) && ok;
    if (wanted("i4_g128")) ok = run_format<DType::I4_G128>(bd, copy_gbs) && ok;
    if (wanted("q4_1")) ok = run_format<DType::Q4_1>(bd, copy_gbs) && ok;
    if (wanted("q5_0")) ok = run_format<DType::Q5_0>(bd, copy_gbs) && ok;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_packed_gemm_bench: %s\n", e.what());
    return 2;
  }
}
