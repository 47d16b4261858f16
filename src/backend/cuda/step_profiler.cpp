#include "backend/cuda/step_profiler.h"

#include <cstdio>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

StepProfiler::StepProfiler(bool on, bool graphs) : on_(on), graphs_(graphs) {
  if (on_)
    for (cudaEvent_t& e : ev_) GRETA_CUDA_CHECK(cudaEventCreate(&e));
}

StepProfiler::~StepProfiler() {
  if (!on_) return;
  for (const auto& [tokens, p] : by_tokens_)
    std::fprintf(
        stderr,
        "greta cuda step profile (%s): %d decode steps of %d tokens, host %.1f us, tail %.3f ms, step %.3f ms\n",
        graphs_ ? "graphs" : "no graphs", p.n, tokens, p.host_us / p.n, p.tail_ms / p.n, p.step_ms / p.n);
  for (cudaEvent_t e : ev_) cudaEventDestroy(e);
}

void StepProfiler::begin(bool decode_step, int tokens, cudaStream_t s) {
  active_ = on_ && decode_step;
  if (!active_) return;
  GRETA_CUDA_CHECK(cudaEventRecord(ev_[0], s));
  t0_ = std::chrono::steady_clock::now();
  tokens_ = tokens;
}

void StepProfiler::before_run(cudaStream_t s) {
  if (!active_) return;
  by_tokens_[tokens_].host_us +=
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0_).count();
  GRETA_CUDA_CHECK(cudaEventRecord(ev_[1], s));
}

void StepProfiler::after_run(cudaStream_t s) {
  if (!active_) return;
  active_ = false;
  GRETA_CUDA_CHECK(cudaEventRecord(ev_[2], s));
  GRETA_CUDA_CHECK(cudaEventSynchronize(ev_[2]));
  float tail = 0, step = 0;
  GRETA_CUDA_CHECK(cudaEventElapsedTime(&tail, ev_[1], ev_[2]));
  GRETA_CUDA_CHECK(cudaEventElapsedTime(&step, ev_[0], ev_[2]));
  Sums& sum = by_tokens_[tokens_];
  sum.tail_ms += tail;
  sum.step_ms += step;
  ++sum.n;
}

}  // namespace greta::cuda
