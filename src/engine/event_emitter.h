// Delivers engine events to their callbacks on a thread of its own.
//
// Why: the engine thread used to run every callback itself between two model steps, and a
// callback wakes an HTTP handler (mutex + condition variable, a futex syscall). Serving hundreds
// of streams that was a large share of the engine thread's wall time with the GPU idle
// (greta_engine_seconds_total{phase="emit"}, docs/notes/serving.md). Handing each step's events to
// this thread lets the next step run on the GPU while they are delivered.
//
// Order is kept: one thread delivers batches in the order they were posted, events of a batch
// in their order. Callbacks run with no engine lock held, so they may call submit/cancel/stats.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "greta/engine.h"

namespace greta {

class EventEmitter {
 public:
  using Callback = std::shared_ptr<const EventCallback>;
  struct Item {
    Callback callback;
    TokenEvent ev;
  };
  // on_failed(request_id) runs (on the emitter thread) when a callback throws for an event
  // that is not the request's last: the consumer is gone and the request should be cancelled.
  explicit EventEmitter(std::function<void(uint64_t)> on_failed);
  ~EventEmitter();  // delivers everything posted, then stops
  EventEmitter(const EventEmitter&) = delete;
  EventEmitter& operator=(const EventEmitter&) = delete;

  // Queues the events (batch is left empty) and returns at once.
  void post(std::vector<Item>& batch);
  // Returns once every event posted so far has been delivered.
  void flush();

 private:
  void run();

  std::function<void(uint64_t)> on_failed_;
  std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::vector<Item> queue_;
  bool delivering_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace greta
