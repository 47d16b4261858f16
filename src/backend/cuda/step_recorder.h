// A step's launches, made at once or recorded and run together at the step's end as a CUDA
// graph (step_graph.h says how graphs are keyed and when they are captured or replayed).
//
// Ops call launch() with a launcher and its arguments by value; while the step is recorded
// the call only appends it. flush() runs the recording: at the end of the step, and before
// anything that frees or rewrites memory a recorded launch may use. Host data a launch reads
// goes through stage(), which knows which staging buffers the recording still reads.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "backend/cuda/staging.h"
#include "backend/cuda/step_graph.h"

namespace greta::cuda {

class StepRecorder {
 public:
  StepRecorder(cudaStream_t s, bool use_graphs) : stream_(s), graphs_on_(use_graphs) {}

  // Starts a step whose launches are recorded when `record` (and graphs are on), else made
  // at once. Runs what an earlier step left recorded first.
  void begin(bool record) {
    flush();
    recording_ = graphs_on_ && record;
  }

  // Runs fn(args...) now, or records it while the step is recorded.
  template <class... P, class... A>
  void launch(void (*fn)(P...), const A&... args) {
    if (recording_) cmds_.add(fn, args...);
    else fn(P(args)...);
  }

  // Copies `bytes` of host data to the device through st for a launch of this step and
  // returns the device address. A recorded launch reads st when the recording runs, so if one
  // still reads st's previous contents the recording runs first.
  const void* stage(Staging& st, const void* src, size_t bytes) {
    if (std::find(staged_.begin(), staged_.end(), &st) != staged_.end()) flush();
    const void* dev = st.put(src, bytes, stream_);
    if (recording_) staged_.push_back(&st);
    return dev;
  }

  // Runs the recorded launches: a graph replay, a capture, or direct calls.
  void flush() {
    staged_.clear();
    if (cmds_.empty()) return;
    try {
      graphs_.run(cmds_, stream_, graphs_on_);
    } catch (...) {
      cmds_.clear();
      throw;
    }
    cmds_.clear();
  }

  const StepGraphs::Stats& stats() const { return graphs_.stats(); }
  // Whether this step's launches are being recorded (else they run as they are made).
  bool recording() const { return recording_; }

 private:
  cudaStream_t stream_;
  bool graphs_on_;
  bool recording_ = false;
  StepCommands cmds_;
  StepGraphs graphs_;
  std::vector<const Staging*> staged_;  // staging buffers the recording reads
};

}  // namespace greta::cuda
