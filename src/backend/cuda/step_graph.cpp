#include "backend/cuda/step_graph.h"

#include <cstdio>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

void StepCommands::execute() const {
  const uint8_t* p = bytes_.data();
  const uint8_t* end = p + bytes_.size();
  while (p < end) {
    Runner r = nullptr;
    std::memcpy(&r, p, sizeof(r));
    p = r(p + sizeof(r));
  }
}

// 64-bit multiply-xorshift over 8-byte words: a 7B step is ~40 KB of commands, hashed in a
// few microseconds; equality is confirmed by comparing the bytes, so collisions cost nothing
// but a compare.
uint64_t StepCommands::hash() const {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ bytes_.size();
  size_t i = 0;
  for (; i + 8 <= bytes_.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes_.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  for (; i < bytes_.size(); ++i) h = (h ^ bytes_[i]) * 0x100000001b3ull;
  return h;
}

StepGraphs::~StepGraphs() {
  for (Graph& g : graphs_) cudaGraphExecDestroy(g.exec);  // destructor: nothing to do on failure
}

cudaGraphExec_t StepGraphs::capture(const StepCommands& c, cudaStream_t s) {
  // ThreadLocal: another thread's unrelated CUDA calls neither break nor join this capture.
  GRETA_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    c.execute();
  } catch (...) {
    cudaStreamEndCapture(s, &graph);  // leave the stream usable, then report the launch error
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  cudaError_t e = cudaStreamEndCapture(s, &graph);
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    cudaGetLastError();  // capture errors are not sticky; clear the last-error slot
    std::fprintf(stderr, "greta cuda: step graph capture failed (%s); running steps without graphs\n",
                 cudaGetErrorString(e));
    return nullptr;
  }
  return exec;
}

void StepGraphs::run(const StepCommands& c, cudaStream_t s, bool use_graphs) {
  if (c.empty()) return;
  if (!use_graphs || capture_broken_) {
    c.execute();
    ++stats_.eager;
    return;
  }
  const uint64_t h = c.hash();
  for (auto it = graphs_.begin(); it != graphs_.end(); ++it) {
    if (it->hash != h || it->bytes != c.bytes()) continue;
    graphs_.splice(graphs_.begin(), graphs_, it);  // most recently used first
    GRETA_CUDA_CHECK(cudaGraphLaunch(graphs_.front().exec, s));
    ++stats_.replayed;
    return;
  }
  // The first sighting runs directly: one-off shapes (a prompt's last chunk, a batch that
  // exists for one step) never pay for a capture.
  if (seen_.size() > 4096) seen_.clear();  // bounded memory under endlessly new shapes
  if (++seen_[h] < 2) {
    c.execute();
    ++stats_.eager;
    return;
  }
  cudaGraphExec_t exec = capture(c, s);
  if (!exec) {
    capture_broken_ = true;
    c.execute();
    ++stats_.eager;
    return;
  }
  seen_.erase(h);
  if (graphs_.size() >= kMaxGraphs) {
    cudaGraphExecDestroy(graphs_.back().exec);
    graphs_.pop_back();
  }
  graphs_.push_front(Graph{h, c.bytes(), exec});
  GRETA_CUDA_CHECK(cudaGraphLaunch(exec, s));
  ++stats_.captured;
}

}  // namespace greta::cuda
