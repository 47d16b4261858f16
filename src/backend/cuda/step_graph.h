// CUDA graphs for whole steps, keyed by exactly what the step launches.
//
// While a step is deferred (CudaBackend::begin_step decides), every op does its host-side
// checks and staging at call time but, instead of launching, appends one command to a
// StepCommands list: a launcher function pointer plus the bytes of every argument it takes
// (device pointers, shapes, scalars, the step's DevStep by value). The list therefore *is*
// the complete description of what the step would launch. At the end of the step
// (to_host, the next begin_step, or anything that needs the stream) StepGraphs runs it:
//   - a list byte-identical to one captured before: replay that graph (one launch);
//   - a list seen once before: capture it into a graph on the stream, instantiate, launch;
//   - otherwise (first sighting, prefill, graphs off): call the launchers directly.
// Because the graph is looked up by the full argument bytes, a graph can only ever replay
// launches identical to the ones the eager path would make -- a moved scratch buffer, a
// different split of the attention, another batch shape all change the bytes and so miss.
// Per-step data (positions, slots, block tables, token ids, gather rows) lives in device
// buffers that are uploaded before the graph launch, in stream order, at the same addresses.
//
// Guarantees: at most kMaxGraphs instantiated graphs, least recently used evicted; all are
// destroyed with the StepGraphs. Not thread-safe (one per backend, one stream).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <list>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace greta::cuda {

// Argument types must compare by their bytes: no padding, no owning members.
template <class T>
inline constexpr bool kByteComparable = std::is_trivially_copyable_v<T> &&
                                        (std::has_unique_object_representations_v<T> || std::is_floating_point_v<T>);

class StepCommands {
 public:
  // Records fn(args...) with each argument converted to fn's parameter type.
  template <class... P, class... A>
  void add(void (*fn)(P...), const A&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "launcher argument count");
    static_assert((kByteComparable<P> && ...), "launcher parameters must be plain values compared by bytes");
    append(&run<P...>);
    append(fn);
    (append(P(args)), ...);
    ++count_;
  }
  // Calls every recorded launcher in order (on whatever the launchers' stream is doing:
  // running, or capturing).
  void execute() const;
  void clear() {
    bytes_.clear();
    count_ = 0;
  }
  bool empty() const { return count_ == 0; }
  int count() const { return count_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  uint64_t hash() const;

 private:
  using Runner = const uint8_t* (*)(const uint8_t*);
  template <class T>
  void append(const T& v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  // Reads fn and its arguments back from p, calls it, returns the end of the record.
  template <class... P>
  static const uint8_t* run(const uint8_t* p) {
    void (*fn)(P...) = nullptr;
    std::memcpy(&fn, p, sizeof(fn));
    p += sizeof(fn);
    std::tuple<std::remove_cv_t<P>...> args;
    std::apply([&](auto&... a) { ((std::memcpy(&a, p, sizeof(a)), p += sizeof(a)), ...); }, args);
    std::apply(fn, args);
    return p;
  }

  std::vector<uint8_t> bytes_;
  int count_ = 0;
};

class StepGraphs {
 public:
  static constexpr size_t kMaxGraphs = 16;
  struct Stats {
    int64_t eager = 0, captured = 0, replayed = 0;
  };

  StepGraphs() = default;
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Runs the commands on s (see the file comment). With use_graphs false: always directly.
  void run(const StepCommands& c, cudaStream_t s, bool use_graphs);
  const Stats& stats() const { return stats_; }

 private:
  struct Graph {
    uint64_t hash = 0;
    std::vector<uint8_t> bytes;
    cudaGraphExec_t exec = nullptr;
  };
  cudaGraphExec_t capture(const StepCommands& c, cudaStream_t s);

  std::list<Graph> graphs_;                 // most recently used first
  std::unordered_map<uint64_t, int> seen_;  // hash -> sightings without a graph
  bool capture_broken_ = false;             // a capture failed: run everything directly
  Stats stats_;
};

}  // namespace greta::cuda
