// Timing shared by the GPU kernel benchmarks (bench/gpu_*_bench.cu).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "backend/cuda/cuda_check.h"

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
  cudaEvent_t a, b;
  GRETA_CUDA_CHECK(cudaEventCreate(&a));
  GRETA_CUDA_CHECK(cudaEventCreate(&b));
  GRETA_CUDA_CHECK(cudaGraphLaunch(ge, s));  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    GRETA_CUDA_CHECK(cudaEventRecord(a, s));
    GRETA_CUDA_CHECK(cudaGraphLaunch(ge, s));
    GRETA_CUDA_CHECK(cudaEventRecord(b, s));
    GRETA_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    GRETA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) / inner);
  }
  GRETA_CUDA_CHECK(cudaEventDestroy(a));
  GRETA_CUDA_CHECK(cudaEventDestroy(b));
  GRETA_CUDA_CHECK(cudaGraphExecDestroy(ge));
  GRETA_CUDA_CHECK(cudaGraphDestroy(g));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
