// What a persistent decode step can buy: the GEMV chain of a Llama-2-7B decode step at batch 1
// (per layer: q/k/v [12288 x 4096], o [4096 x 4096], gate/up [22016 x 4096], down [4096 x 11008]
// over its SwiGLU; 32 layers, 13 GB of bf16 weights; attention and norms left out) run four
// ways with one and the same GEMV device function and row partition, so their outputs must be
// bit-identical and only the boundaries between phases differ:
//   graph       one kernel per phase (128 a step), replayed as a CUDA graph
//   graph_pdl   the same with programmatic dependent launch: each kernel loads its first
//               weights, then waits for the previous one (griddepcontrol), as the engine's
//               decode GEMVs do
//   coop        one cooperative launch for the whole step, a grid barrier between phases
//   coop_pre    the same, each warp loading its first weights of the next phase before the
//               barrier (weights never depend on the previous phase)
// Prints JSON lines (card, bytes, ms a step, GB/s, % of the copy bandwidth measured in the
// same run, max difference against `graph`) and a short table on stderr.
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "gpu_bench_timing.h"

namespace cg = cooperative_groups;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kDim = 4096, kFfn = 11008, kLayers = 32, kThreads = 256;
constexpr int kUnroll = 4;  // 16-byte chunks a lane a row in flight (two rows a warp)

struct Phase {
  const bf16* w;    // [m, k]
  const bf16* in;   // [k], or [2 k] (gate then up) with swiglu
  const bf16* res;  // [m] added to the result (the residual stream), or null
  bf16* out;        // [m]; may be res (each row is read, then written, by one lane)
  int m, k, swiglu;
};
struct Step {
  Phase ph[kLayers * 4];
};

__device__ __forceinline__ uint4 ld_w(const bf16* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 8 input values at k0: x, or silu(gate) * up.
__device__ __forceinline__ void input8(const Phase& p, int k0, float (&v)[8]) {
  const uint4 a = *reinterpret_cast<const uint4*>(p.in + k0);
  const bf16* ha = reinterpret_cast<const bf16*>(&a);
  if (!p.swiglu) {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(ha[j]);
    return;
  }
  const uint4 b = *reinterpret_cast<const uint4*>(p.in + p.k + k0);
  const bf16* hb = reinterpret_cast<const bf16*>(&b);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float g = __bfloat162float(ha[j]);
    v[j] = __bfloat162float(__float2bfloat16_rn(g / (1.f + __expf(-g)))) * __bfloat162float(hb[j]);
  }
}

__device__ __forceinline__ float dot8(const uint4& w, const float (&v)[8]) {
  const bf16* h = reinterpret_cast<const bf16*>(&w);
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) s = fmaf(__bfloat162float(h[j]), v[j], s);
  return s;
}

// Warp gw of nw takes row pairs gw, gw + nw, ...; lane l reads chunks l, l + 32, ... of a row.
// The first batch of weights of the warp's first pair is loaded, then sync() runs (the wait for
// the previous phase: every thread calls it once, at the same point), then the loop.
template <class Sync>
__device__ void gemv_phase(const Phase& p, int gw, int nw, int lane, Sync sync) {
  const int chunks = p.k / 8;
  uint4 pre[2][kUnroll];
  const int first = 2 * gw;
  if (first < p.m) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = lane + 32 * u;
      const int r1 = min(first + 1, p.m - 1);
      pre[0][u] = c < chunks ? ld_w(p.w + int64_t(first) * p.k + 8 * c) : make_uint4(0, 0, 0, 0);
      pre[1][u] = c < chunks ? ld_w(p.w + int64_t(r1) * p.k + 8 * c) : make_uint4(0, 0, 0, 0);
    }
  }
  sync();
  for (int r0 = first; r0 < p.m; r0 += 2 * nw) {
    const int r1 = min(r0 + 1, p.m - 1);
    const bf16* w0 = p.w + int64_t(r0) * p.k;
    const bf16* w1 = p.w + int64_t(r1) * p.k;
    float a0 = 0.f, a1 = 0.f;
    for (int base = 0; base < chunks; base += 32 * kUnroll) {
      uint4 x0[kUnroll], x1[kUnroll];
      if (r0 == first && base == 0) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) x0[u] = pre[0][u], x1[u] = pre[1][u];
      } else {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int c = base + lane + 32 * u;
          x0[u] = c < chunks ? ld_w(w0 + 8 * c) : make_uint4(0, 0, 0, 0);
          x1[u] = c < chunks ? ld_w(w1 + 8 * c) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = base + lane + 32 * u;
        if (c < chunks) {
          float v[8];
          input8(p, 8 * c, v);
          a0 += dot8(x0[u], v);
          a1 += dot8(x1[u], v);
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      a0 += __shfl_xor_sync(0xffffffffu, a0, o);
      a1 += __shfl_xor_sync(0xffffffffu, a1, o);
    }
    if (lane == 0) {
      if (p.res) {
        a0 = __bfloat162float(__float2bfloat16_rn(a0)) + __bfloat162float(p.res[r0]);
        a1 = __bfloat162float(__float2bfloat16_rn(a1)) + __bfloat162float(p.res[r1]);
      }
      p.out[r0] = __float2bfloat16_rn(a0);
      if (r0 + 1 < p.m) p.out[r0 + 1] = __float2bfloat16_rn(a1);
    }
  }
}

__device__ __forceinline__ int global_warp() { return int((blockIdx.x * blockDim.x + threadIdx.x) / 32); }
__device__ __forceinline__ int grid_warps() { return int(gridDim.x * blockDim.x / 32); }

template <bool PDL>
__global__ void __launch_bounds__(kThreads) phase_kernel(const Phase p) {
  if constexpr (PDL) asm volatile("griddepcontrol.launch_dependents;");
  gemv_phase(p, global_warp(), grid_warps(), threadIdx.x % 32, [] {
    if constexpr (PDL) asm volatile("griddepcontrol.wait;" ::: "memory");
  });
}

template <bool PRE>
__global__ void __launch_bounds__(kThreads) step_kernel(const Step* __restrict__ s, int n_phases) {
  cg::grid_group grid = cg::this_grid();
  for (int i = 0; i < n_phases; ++i) {
    const Phase p = s->ph[i];
    if constexpr (PRE) {
      gemv_phase(p, global_warp(), grid_warps(), threadIdx.x % 32, [&] {
        if (i > 0) grid.sync();
      });
    } else {
      if (i > 0) grid.sync();
      gemv_phase(p, global_warp(), grid_warps(), threadIdx.x % 32, [] {});
    }
  }
}

__global__ void fill_random(bf16* w, size_t n, float scale, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    w[i] = __float2bfloat16_rn(scale * (float(h & 0xffffu) / 32768.f - 1.f));
  }
}

}  // namespace

int main() {
  try {
    const BenchDevice bd = bench_device();
    const cudaDeviceProp& prop = bd.prop;
    const std::string& dev = bd.name;
    cudaStream_t st = bd.stream;

    const double copy_gbs = copy_bandwidth_gbs(st);

    const size_t per_layer = size_t(3 * kDim) * kDim + size_t(kDim) * kDim + size_t(2 * kFfn) * kDim +
                             size_t(kDim) * kFfn;
    const size_t n_w = per_layer * kLayers;
    bf16* w = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&w, n_w * sizeof(bf16)));
    bf16 *x = nullptr, *qkv = nullptr, *x2 = nullptr, *gu = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&x, kDim * sizeof(bf16)));
    GRETA_CUDA_CHECK(cudaMalloc(&qkv, 3 * kDim * sizeof(bf16)));
    GRETA_CUDA_CHECK(cudaMalloc(&x2, kDim * sizeof(bf16)));
    GRETA_CUDA_CHECK(cudaMalloc(&gu, 2 * kFfn * sizeof(bf16)));
    Step hs{};
    size_t off = 0;
    for (int l = 0; l < kLayers; ++l) {
      const bf16* wq = w + off;
      off += size_t(3 * kDim) * kDim;
      const bf16* wo = w + off;
      off += size_t(kDim) * kDim;
      const bf16* wg = w + off;
      off += size_t(2 * kFfn) * kDim;
      const bf16* wd = w + off;
      off += size_t(kDim) * kFfn;
      // Residual adds after o and down as in the model (without them SwiGLU, quadratic in small
      // activations, drives the stream to zero within a few layers).
      hs.ph[4 * l + 0] = Phase{wq, x, nullptr, qkv, 3 * kDim, kDim, 0};
      hs.ph[4 * l + 1] = Phase{wo, qkv, x, x2, kDim, kDim, 0};  // attention left out: o reads q
      hs.ph[4 * l + 2] = Phase{wg, x2, nullptr, gu, 2 * kFfn, kDim, 0};
      hs.ph[4 * l + 3] = Phase{wd, gu, x2, x, kDim, kFfn, 1};
    }
    // Weights uniform in +-sqrt(3/k) (a GEMV keeps unit variance), the two that feed the residual
    // stream (o, down) 10x smaller: with no norm in the chain, SwiGLU's quadratic growth would
    // otherwise overflow within a few layers. The stream stays O(1) over the 32 layers.
    for (int i = 0; i < kLayers * 4; ++i) {
      const Phase& p = hs.ph[i];
      const float s = p.res ? 0.1f : 1.f;
      fill_random<<<1024, 256, 0, st>>>(const_cast<bf16*>(p.w), size_t(p.m) * p.k, s * std::sqrt(3.f / float(p.k)),
                                        7u + uint32_t(i));
    }
    GRETA_CUDA_CHECK(cudaGetLastError());
    Step* ds = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&ds, sizeof(Step)));
    GRETA_CUDA_CHECK(cudaMemcpyAsync(ds, &hs, sizeof(Step), cudaMemcpyHostToDevice, st));

    int per_sm = 0;
    GRETA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, step_kernel<true>, kThreads, 0));
    int per_sm0 = 0;
    GRETA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm0, step_kernel<false>, kThreads, 0));
    per_sm = std::min(per_sm, per_sm0);
    const int blocks = per_sm * prop.multiProcessorCount;
    std::printf("{\"bench\":\"device\",\"device\":\"%s\",\"sms\":%d,\"blocks_per_sm\":%d,\"copy_GBps\":%.1f}\n",
                dev.c_str(), prop.multiProcessorCount, per_sm, copy_gbs);

    const int n_ph = kLayers * 4;
    auto reset_x = [&] { fill_random<<<16, 256, 0, st>>>(x, kDim, 1.f, 11u); };
    auto launch_phases = [&](bool pdl) {
      for (int i = 0; i < n_ph; ++i) {
        cudaLaunchConfig_t cfg{};
        cfg.gridDim = dim3(unsigned(blocks));
        cfg.blockDim = dim3(kThreads);
        cfg.stream = st;
        cudaLaunchAttribute attr{};
        attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr.val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = &attr;
        cfg.numAttrs = pdl ? 1 : 0;
        if (pdl) GRETA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, phase_kernel<true>, hs.ph[i]));
        else GRETA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, phase_kernel<false>, hs.ph[i]));
      }
    };
    auto launch_coop = [&](bool pre) {
      void* args[] = {&ds, const_cast<int*>(&n_ph)};
      if (pre)
        GRETA_CUDA_CHECK(
            cudaLaunchCooperativeKernel((void*)step_kernel<true>, dim3(blocks), dim3(kThreads), args, 0, st));
      else
        GRETA_CUDA_CHECK(
            cudaLaunchCooperativeKernel((void*)step_kernel<false>, dim3(blocks), dim3(kThreads), args, 0, st));
    };
    // One step from the same x for each variant; outputs compared with `graph`'s.
    auto result = [&](auto&& run_once) {
      reset_x();
      run_once();
      GRETA_CUDA_CHECK(cudaStreamSynchronize(st));
      std::vector<uint16_t> h(kDim);
      GRETA_CUDA_CHECK(cudaMemcpy(h.data(), x, kDim * 2, cudaMemcpyDeviceToHost));
      std::vector<float> f(kDim);
      for (int i = 0; i < kDim; ++i) {
        const uint32_t b = uint32_t(h[size_t(i)]) << 16;
        std::memcpy(&f[size_t(i)], &b, 4);
      }
      return f;
    };
    const char* names[] = {"graph", "graph_pdl", "coop", "coop_pre"};
    std::vector<float> ref;
    bool ok = true;
    std::vector<double> ms(4);
    for (int v = 0; v < 4; ++v) {
      auto once = [&] {
        if (v < 2) launch_phases(v == 1);
        else launch_coop(v == 3);
      };
      const std::vector<float> out = result(once);
      if (v == 0) ref = out;
      double diff = 0, mag = 0;
      bool finite = true;
      for (int i = 0; i < kDim; ++i) {
        finite = finite && std::isfinite(out[size_t(i)]);
        diff = std::max(diff, double(std::fabs(out[size_t(i)] - ref[size_t(i)])));
        mag = std::max(mag, double(std::fabs(ref[size_t(i)])));
      }
      const bool good = finite && diff == 0.0 && mag > 0;
      ok = ok && good;
      if (v < 2) ms[size_t(v)] = median_graph_ms([&](int) { launch_phases(v == 1); }, st, 20, 1);
      else ms[size_t(v)] = median_ms([&](int) { launch_coop(v == 3); }, 20, 1, st);
      const double gbs = double(n_w) * 2 / ms[size_t(v)] / 1e6;
      std::printf(
          "{\"bench\":\"persistent_step\",\"device\":\"%s\",\"variant\":\"%s\",\"layers\":%d,\"blocks\":%d,"
          "\"weight_bytes\":%zu,\"ms\":%.4f,\"GBps\":%.1f,\"pct_of_copy\":%.2f,\"max_diff_vs_graph\":%g,"
          "\"max_abs\":%g,\"check\":\"%s\"}\n",
          dev.c_str(), names[v], kLayers, blocks, n_w * 2, ms[size_t(v)], gbs, 100.0 * gbs / copy_gbs, diff, mag,
          good ? "pass" : "FAIL");
      std::fflush(stdout);
    }
    std::fprintf(stderr, "%s, copy %.0f GB/s, %d blocks of %d threads, %zu MB of weights a step\n", dev.c_str(),
                 copy_gbs, blocks, kThreads, n_w * 2 >> 20);
    for (int v = 0; v < 4; ++v) {
      const double gbs = double(n_w) * 2 / ms[size_t(v)] / 1e6;
      std::fprintf(stderr, "  %-10s %8.3f ms  %7.1f GB/s  %5.1f%% of copy\n", names[v], ms[size_t(v)], gbs,
                   100.0 * gbs / copy_gbs);
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_persistent_step_bench: %s\n", e.what());
    return 2;
  }
}
