// Server-sent events and the hand-off of engine events to an HTTP thread.
//
// The engine calls back on its own thread and must never block there, while an HTTP handler
// thread waits for output. EventChannel is the queue between them: push() only appends under a
// mutex; the handler drains with a timeout so it can also notice a client that went away.
// The channel is shared (shared_ptr) by the engine callbacks and the handler, so callbacks
// arriving after the HTTP request ended (e.g. the "cancelled" event) are harmless.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "greta/engine.h"

namespace greta::server {

class Metrics;

class EventChannel : public std::enable_shared_from_this<EventChannel> {
 public:
  // n_choices engine requests feed this channel; metrics (may be null) gets TTFT and
  // inter-token latency measured from `start`.
  EventChannel(int n_choices, Metrics* metrics);

  // The callback to give Engine::submit for choice `index` (keeps the channel alive).
  EventCallback callback(int index);

  struct Item {
    int index;
    TokenEvent ev;
  };
  // Everything queued; waits up to `timeout` when the queue is empty.
  std::vector<Item> wait(std::chrono::milliseconds timeout);
  // True once every choice has delivered its finished event and the queue was drained.
  bool drained() const;

 private:
  void push(int index, const TokenEvent& ev);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  int unfinished_;
  Metrics* metrics_;
  std::chrono::steady_clock::time_point start_;
  std::vector<std::chrono::steady_clock::time_point> last_token_;  // per choice
  std::vector<bool> got_token_;
};

// "data: <json>\n\n": one SSE event.
std::string sse_event(const nlohmann::json& j);
std::string sse_done();     // "data: [DONE]\n\n"
std::string sse_comment();  // ": keep-alive\n\n" (clients ignore it; probes the socket)

}  // namespace greta::server
