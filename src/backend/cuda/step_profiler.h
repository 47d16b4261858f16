// Per-step timing of decode steps (CudaOptions::step_profile), averaged per token count and
// printed to stderr when the profiler is destroyed. Three figures per step:
//   host = begin_step to the step's end on the host (the ops' checks and, with graphs, recording);
//   tail = device time from the step's end (its launch or graph replay) to its completion;
//   step = device time from the plan upload to the completion.
// Off, every call is a test of one flag.
#pragma once
#include <cuda_runtime.h>

#include <chrono>
#include <map>

namespace greta::cuda {

class StepProfiler {
 public:
  StepProfiler(bool on, bool graphs);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  // At begin_step, after the plan upload: starts timing if on and the step is a decode step.
  void begin(bool decode_step, int tokens, cudaStream_t s);
  // Around the step's end: before its launches run, and after (waits for the step to finish).
  bool active() const { return active_; }
  void before_run(cudaStream_t s);
  void after_run(cudaStream_t s);

 private:
  struct Sums {
    double host_us = 0, tail_ms = 0, step_ms = 0;
    int n = 0;
  };
  bool on_, graphs_, active_ = false;
  int tokens_ = 0;
  cudaEvent_t ev_[3] = {nullptr, nullptr, nullptr};  // after the upload, at the end, at completion
  std::chrono::steady_clock::time_point t0_;
  std::map<int, Sums> by_tokens_;
};

}  // namespace greta::cuda
