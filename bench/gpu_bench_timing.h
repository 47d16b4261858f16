// Timing shared by the GPU kernel benchmarks (bench/gpu_*_bench.cu).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"

// Median over `reps` repetitions of the CUDA-event time of run_rep(r) on stream s, divided by
// per_rep (the launches one repetition makes).
template <class F>
double median_event_ms(F&& run_rep, int reps, int per_rep, cudaStream_t s) {
  cudaEvent_t a, b;
  GRETA_CUDA_CHECK(cudaEventCreate(&a));
  GRETA_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    GRETA_CUDA_CHECK(cudaEventRecord(a, s));
    run_rep(r);
    GRETA_CUDA_CHECK(cudaEventRecord(b, s));
    GRETA_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    GRETA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) / per_rep);
  }
  GRETA_CUDA_CHECK(cudaEventDestroy(a));
  GRETA_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median time of one launch(i) call, `inner` launches per repetition issued from the host;
// three untimed launches warm up first.
template <class F>
double median_ms(F&& launch, int reps, int inner, cudaStream_t s = nullptr) {
  for (int i = 0; i < 3; ++i) launch(i);
  return median_event_ms(
      [&](int r) {
        for (int i = 0; i < inner; ++i) launch(r * inner + i);
      },
      reps, inner, s);
}

// Median time of one launch(i) call over `reps` replays: the `inner` launches are captured once
// into a CUDA graph on stream s and the graph is replayed, because the decode step runs as a
// graph (no host launch overhead between kernels). One untimed replay warms up first.
template <class F>
double median_graph_ms(F&& launch, cudaStream_t s, int reps, int inner) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  GRETA_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < inner; ++i) launch(i);
  GRETA_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  GRETA_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  GRETA_CUDA_CHECK(cudaGraphLaunch(ge, s));  // warm-up
  const double ms = median_event_ms([&](int) { GRETA_CUDA_CHECK(cudaGraphLaunch(ge, s)); }, reps, inner, s);
  GRETA_CUDA_CHECK(cudaGraphExecDestroy(ge));
  GRETA_CUDA_CHECK(cudaGraphDestroy(g));
  return ms;
}

// The copy bandwidth every percentage in the project is taken of: bytes read + written per second
// (GB/s) of a 1 GiB device-to-device cudaMemcpy, median of 10.
inline double copy_bandwidth_gbs(cudaStream_t s) {
  const size_t big = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&src, big));
  GRETA_CUDA_CHECK(cudaMalloc(&dst, big));
  const double ms = median_ms(
      [&](int) { GRETA_CUDA_CHECK(cudaMemcpyAsync(dst, src, big, cudaMemcpyDeviceToDevice, s)); }, 10, 1, s);
  GRETA_CUDA_CHECK(cudaFree(src));
  GRETA_CUDA_CHECK(cudaFree(dst));
  return 2.0 * double(big) / ms / 1e6;
}

// The card the benchmark runs on: its properties, its name for the JSON lines, and a stream.
struct BenchDevice {
  cudaDeviceProp prop{};
  std::string name;
  cudaStream_t stream = nullptr;
};
inline BenchDevice bench_device() {
  BenchDevice d;
  GRETA_CUDA_CHECK(cudaGetDeviceProperties(&d.prop, 0));
  d.name = d.prop.name;
  GRETA_CUDA_CHECK(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
  return d;
}
