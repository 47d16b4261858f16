// The persistent decode step's profile (CudaOptions::step_profile): for every phase and block,
// the wait before the phase (for the previous phase's done count), the staging of its input and
// its work, summed over steps on the device (PersistentStepArgs::trace) and printed to stderr as
// a table per kind of phase when the trace is destroyed, with the spread of the blocks' busy
// times (what the waits are made of) and the slowest and fastest blocks with their SMs. Off, it hands out no buffer.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"

namespace greta::cuda {

class PersistentTrace {
 public:
  explicit PersistentTrace(bool on) : on_(on) {}
  ~PersistentTrace();
  PersistentTrace(const PersistentTrace&) = delete;
  PersistentTrace& operator=(const PersistentTrace&) = delete;

  // The buffer for one more step of n_phases phases (the last one the output projection, the
  // others per_layer a layer) over `blocks` blocks, or null when off. A launch of another shape
  // starts the sums again (zeroed on s).
  int64_t* step(int n_phases, int per_layer, int blocks, cudaStream_t s);

 private:
  bool on_;
  DeviceBuffer buf_;
  int n_phases_ = 0, per_layer_ = 0, blocks_ = 0;
  int64_t steps_ = 0;
};

}  // namespace greta::cuda
