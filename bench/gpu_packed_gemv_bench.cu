// Does staging packed weights in shared memory with bulk copies (cp.async.bulk + mbarrier, the
// Hopper copy engine) beat the production decode GEMV's register stream at batch 1?
//
// Why ask: the packed GEMV (gemv_kernel.cuh with WeightQuant) runs at 40-68% of copy bandwidth
// where bf16 runs at 84-98%; Nsight Compute shows it latency-bound: the registers the
// dequantization needs leave 2-3 blocks an SM, each lane with one or two 16-byte loads in
// flight, and each 16-byte load of 4-bit weights carries 4x the values of a bf16 one. A bulk copy
// puts bytes in flight without holding a register: one lane per row asks for a whole stage of
// the row (its quants and its scales) and the warps dequantize from shared memory once it lands.
// With PDL the first stages are requested before the wait for the previous kernel, since weights
// never depend on it.
//
// Variants, each a graph of GEMVs at batch 1 over the Llama-2-7B shapes (q/k/v 12288 x 4096,
// o 4096 x 4096, gate/up 22016 x 4096, down 4096 x 11008), 32 layers of distinct weights:
//   prod          the engine's packed GEMV (gemv_fused, pipelined PDL launch)
//   bulk_SK_S     this file's kernel: stages of SK values a row, S stages in flight
// per shape (32 launches of that shape) and for the whole chain (128 launches a step). Every
// variant's output is compared with prod's (same dequantized values, another summation order).
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
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/quant_planes.h"
#include "gpu_bench_timing.h"

namespace greta::cuda {
namespace {

constexpr int kWarpsB = 8, kThreadsB = 32 * kWarpsB, kRowsB = 16;

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void bar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(b)), "r"(count));
}
__device__ __forceinline__ void bar_expect(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bar_wait(uint64_t* b, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}" ::"r"(smem_addr(b)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* b) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(b))
      : "memory");
}
__device__ __forceinline__ uint4 lds128(const uint8_t* p) { return *reinterpret_cast<const uint4*>(p); }

// Per format: bytes a row of SK values takes in the q and sc planes (quant_planes.h).
template <DType T>
struct Stage {
  static constexpr bool kBytes = byte_quants(T);
  __host__ __device__ static constexpr int q(int sk) { return kBytes ? sk : sk / 2; }
  __host__ __device__ static constexpr int sc(int sk) {
    return sk / 16;
  }  // Q4_0 / Q8_0: fp16 per 32; Q4_K: 16 B per 256
};

// out [m] = w [m, k] @ x [k], 16 rows a block. Stage s holds values [s SK, (s + 1) SK) of the
// block's 16 rows: quants (rows padded by 64 bytes, so the 8 rows a quarter-warp reads fall in
// different banks) and scales. Lane r < 16 of warp 0 copies row r's quants, lane 16 + r its scales.
template <DType T, int SK, int STAGES>
__global__ void __launch_bounds__(kThreadsB)
    bulk_gemv(const uint8_t* __restrict__ w, const bf16* __restrict__ x, bf16* __restrict__ out, int64_t m, int64_t k) {
  using WF = WeightQuant<T>;
  using S = Stage<T>;
  constexpr int kSub = WF::kSub, kChunk = 32 * kSub;
  constexpr int kQPitch = S::q(SK) + 64, kScRow = S::sc(SK);
  constexpr int kStageBytes = kRowsB * (kQPitch + kScRow);
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t bar[STAGES];
  __shared__ float red[kWarpsB][2][32];
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  const int64_t row0 = int64_t(blockIdx.x) * kRowsB;
  const QuantPlanes P = quant_planes(T, m, k);
  const int n_stages = int((k + SK - 1) / SK);
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) bar_init(&bar[s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  auto issue = [&](int s) {  // warp 0
    const int64_t v0 = int64_t(s) * SK, len = min(int64_t(SK), k - v0);
    const uint32_t qb = uint32_t(S::q(int(len))), scb = uint32_t(S::sc(int(len)));
    uint8_t* buf = smem + (s % STAGES) * kStageBytes;
    if (lane == 0) bar_expect(&bar[s % STAGES], kRowsB * (qb + scb));
    __syncwarp();
    const int r = lane % 16;
    const int64_t row = min(row0 + r, m - 1);
    if (lane < 16)
      bulk_copy(buf + r * kQPitch, w + P.q + row * int64_t(plane_q_row(T, k)) + S::q(int(v0)), qb, &bar[s % STAGES]);
    else
      bulk_copy(buf + kRowsB * kQPitch + r * kScRow, w + P.sc + row * int64_t(plane_sc_row(T, k)) + S::sc(int(v0)), scb,
                &bar[s % STAGES]);
  };
  asm volatile("griddepcontrol.launch_dependents;");
  if (warp == 0)
    for (int s = 0; s < min(STAGES, n_stages); ++s) issue(s);
  asm volatile("griddepcontrol.wait;" ::: "memory");
  float acc[2][4] = {};
  typename WF::Lane wl{};
  for (int s = 0; s < n_stages; ++s) {
    bar_wait(&bar[s % STAGES], uint32_t((s / STAGES) & 1));
    const uint8_t* buf = smem + (s % STAGES) * kStageBytes;
    const int64_t v0 = int64_t(s) * SK, len = min(int64_t(SK), k - v0);
    for (int cl = warp; cl * kChunk < len; cl += kWarpsB) {
      const int vl = cl * kChunk + 8 * kSub * t;  // this lane's granule, in the stage
      typename WF::Raw ra = WF::zero(), rb = WF::zero();
      const uint8_t* qa = buf + g * kQPitch + S::q(vl);
      const uint8_t* sca = buf + kRowsB * kQPitch + g * kScRow;
      ra.q = lds128(qa);
      rb.q = lds128(qa + 8 * kQPitch);
      const int gl = vl / 32;
      if constexpr (T == DType::Q4_K) {
        ra.sc = lds128(sca + 16 * (gl / 8));
        rb.sc = lds128(sca + 8 * kScRow + 16 * (gl / 8));
      } else {
        ra.sc.x = *reinterpret_cast<const uint16_t*>(sca + 2 * gl);
        rb.sc.x = *reinterpret_cast<const uint16_t*>(sca + 8 * kScRow + 2 * gl);
      }
      // dequant reads the chunk index only for the K-quants' sub-block: g0 + 4 c must be the group.
      wl.g0 = (v0 + vl) / 32;
      uint4 da[kSub], db[kSub];
      WF::dequant(wl, ra, 0, da);
      WF::dequant(wl, rb, 0, db);
      const bf16* xp = x + v0 + vl;
#pragma unroll
      for (int q = 0; q < kSub; ++q) {
        const uint4 vx = ld_cached(xp + 8 * q);
        float(&c)[4] = acc[q % 2];  // kSub is even: two interleaved chains
        mma_bf16(c, da[q].x, db[q].x, da[q].y, db[q].y, vx.x, vx.y);
        mma_bf16(c, da[q].z, db[q].z, da[q].w, db[q].w, vx.z, vx.w);
      }
    }
    __syncthreads();  // every warp is done with this buffer
    if (warp == 0 && s + STAGES < n_stages) issue(s + STAGES);
  }
  // Token 0 is column 0 of the mma tile: c0 (row g) and c2 (row g + 8) of the lanes t = 0.
  red[warp][0][lane] = acc[0][0] + acc[1][0];
  red[warp][1][lane] = acc[0][2] + acc[1][2];
  __syncthreads();
  if (threadIdx.x < 16) {
    const int r = int(threadIdx.x), half = r / 8, gg = r % 8;
    float sum = 0.f;
#pragma unroll
    for (int v = 0; v < kWarpsB; ++v) sum += red[v][half][4 * gg];
    if (row0 + r < m) out[row0 + r] = __float2bfloat16_rn(sum);
  }
}

template <DType T, int SK, int STAGES>
void launch_bulk(const void* w, const bf16* x, bf16* out, int64_t m, int64_t k, cudaStream_t s) {
  constexpr int kBytes = kRowsB * (Stage<T>::q(SK) + 64 + Stage<T>::sc(SK)) * STAGES;
  static bool attr = false;
  if (!attr) {
    GRETA_CUDA_CHECK(
        cudaFuncSetAttribute(bulk_gemv<T, SK, STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
    attr = true;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned((m + kRowsB - 1) / kRowsB));
  cfg.blockDim = dim3(kThreadsB);
  cfg.dynamicSmemBytes = kBytes;
  cfg.stream = s;
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &a;
  cfg.numAttrs = 1;
  GRETA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, bulk_gemv<T, SK, STAGES>, static_cast<const uint8_t*>(w), x, out, m, k));
}

void launch_prod(DType t, const void* w, const bf16* x, bf16* out, int64_t m, int64_t k, cudaStream_t s) {
  GemvArgs a{};
  a.x = x;
  a.k = k;
  a.n = 1;
  a.seg0 = GemvSeg{static_cast<const bf16*>(w), nullptr, out, m};
  a.wfmt = int32_t(t);
  a.pipeline = 1;
  gemv_fused(a, 0.f, s);
}

using Launch = void (*)(const void*, const bf16*, bf16*, int64_t, int64_t, cudaStream_t);
struct Variant {
  const char* name;
  Launch run;  // null: prod
};

template <DType T>
std::vector<Variant> variants() {
  return {{"prod", nullptr},
          {"bulk_1024_2", &launch_bulk<T, 1024, 2>},
          {"bulk_1024_4", &launch_bulk<T, 1024, 4>},
          {"bulk_2048_3", &launch_bulk<T, 2048, 3>}};
}

__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = uint8_t(h);
  }
}
// Scale planes: every 16-bit word a small positive fp16 (2^-7 .. 2^-6), so sums stay finite.
__global__ void fill_scales(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2246822519u ^ seed;
    h ^= h >> 13;
    p[i] = uint16_t(0x2000u | (h & 0x3ffu));
  }
}
__global__ void fill_x(bf16* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __float2bfloat16_rn(float(int((i * 37) % 201) - 100) / 100.f);
}

struct Shape {
  const char* name;
  int64_t m, k;
};
constexpr Shape kShapes[] = {{"qkv", 12288, 4096}, {"o", 4096, 4096}, {"gate_up", 22016, 4096}, {"down", 4096, 11008}};
constexpr int kLayers = 32;

template <DType T>
bool run_format(const BenchDevice& bd, double copy_gbs) {
  cudaStream_t st = bd.stream;
  const std::string fmt(dtype_name(T));
  // Weights of every (layer, shape), one allocation each.
  std::vector<std::vector<void*>> w(4, std::vector<void*>(kLayers));
  size_t step_bytes = 0;
  for (int si = 0; si < 4; ++si) {
    const QuantPlanes P = quant_planes(T, kShapes[si].m, kShapes[si].k);
    for (int l = 0; l < kLayers; ++l) {
      GRETA_CUDA_CHECK(cudaMalloc(&w[size_t(si)][size_t(l)], P.total));
      auto* b = static_cast<uint8_t*>(w[size_t(si)][size_t(l)]);
      fill_bytes<<<1024, 256, 0, st>>>(b, P.total, uint32_t(97 * si + l));
      fill_scales<<<256, 256, 0, st>>>(reinterpret_cast<uint16_t*>(b + P.sc), (P.d - P.sc) / 2, uint32_t(si + 31 * l));
      step_bytes += P.total;
    }
  }
  bf16 *x = nullptr, *out = nullptr, *ref = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&x, 11008 * sizeof(bf16)));
  GRETA_CUDA_CHECK(cudaMalloc(&out, 22016 * sizeof(bf16)));
  GRETA_CUDA_CHECK(cudaMalloc(&ref, 22016 * sizeof(bf16)));
  fill_x<<<64, 256, 0, st>>>(x, 11008);
  GRETA_CUDA_CHECK(cudaGetLastError());
  bool ok = true;
  const auto vs = variants<T>();
  auto launch = [&](const Variant& v, int si, int l, bf16* o) {
    const Shape& sh = kShapes[si];
    if (v.run) v.run(w[size_t(si)][size_t(l)], x, o, sh.m, sh.k, st);
    else launch_prod(T, w[size_t(si)][size_t(l)], x, o, sh.m, sh.k, st);
  };
  std::vector<std::vector<double>> pct(vs.size(), std::vector<double>(5));
  for (size_t vi = 0; vi < vs.size(); ++vi) {
    const Variant& v = vs[vi];
    // Check: layer 0 of each shape against prod.
    double worst = 0;
    for (int si = 0; si < 4; ++si) {
      const int64_t m = kShapes[si].m;
      launch(vs[0], si, 0, ref);
      launch(v, si, 0, out);
      GRETA_CUDA_CHECK(cudaStreamSynchronize(st));
      std::vector<uint16_t> a(static_cast<size_t>(m)), b(static_cast<size_t>(m));
      GRETA_CUDA_CHECK(cudaMemcpy(a.data(), out, size_t(m) * 2, cudaMemcpyDeviceToHost));
      GRETA_CUDA_CHECK(cudaMemcpy(b.data(), ref, size_t(m) * 2, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      for (int64_t i = 0; i < m; ++i) {
        const float fa = bf16_to_float(a[size_t(i)]), fb = bf16_to_float(b[size_t(i)]);
        if (!std::isfinite(fa) || !std::isfinite(fb)) num = INFINITY;
        num += double(fa - fb) * (fa - fb);
        den += double(fb) * fb;
      }
      worst = std::max(worst, std::sqrt(num / std::max(den, 1e-30)));
    }
    const bool good = worst < 5e-3;
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
  for (auto& per_shape : w)
    for (void* p : per_shape) GRETA_CUDA_CHECK(cudaFree(p));
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
    bool ok = run_format<greta::DType::Q4_0>(bd, copy_gbs);
    ok = run_format<greta::DType::Q4_K>(bd, copy_gbs) && ok;
    ok = run_format<greta::DType::Q8_0>(bd, copy_gbs) && ok;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_packed_gemv_bench: %s\n", e.what());
    return 2;
  }
}
