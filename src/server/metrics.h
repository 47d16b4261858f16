// Prometheus metrics of the server: HTTP requests by path and status, latency histograms
// (time to first token, inter-token latency), plus the engine's own counters and gauges
// (queue depth, running sequences, KV blocks, tokens, prefix-cache hits, engine time per loop
// phase) read at scrape time.
// Thread-safe: the engine thread observes latencies while HTTP threads count requests.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "greta/engine.h"

namespace greta::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds, ascending; +Inf is implicit
  void observe(double v);
  // Appends the _bucket/_sum/_count lines (caller holds the lock that guards this object).
  void render(std::string& out, const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& path, int status);
  void observe_ttft(double seconds);
  void observe_itl(double seconds);
  void count_disconnect();  // a client went away and its requests were cancelled
  // A connection the server answered and closed before any handler ran (the connection bound,
  // a head or body deadline, an oversized head): `reason` is a fixed label.
  void count_refused(const std::string& reason);
  std::string render(const EngineStats& s) const;  // Prometheus text exposition format 0.0.4

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  Histogram ttft_, itl_;
  uint64_t disconnects_ = 0;
  std::map<std::string, uint64_t> refused_;
};

}  // namespace greta::server
