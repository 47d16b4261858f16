#include "engine/event_emitter.h"

namespace greta {

EventEmitter::EventEmitter(std::function<void(uint64_t)> on_failed)
    : on_failed_(std::move(on_failed)), thread_([this] { run(); }) {}

EventEmitter::~EventEmitter() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

void EventEmitter::post(std::vector<Item>& batch) {
  if (batch.empty()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.empty()) {
      queue_.swap(batch);
    } else {
      for (Item& it : batch) queue_.push_back(std::move(it));
    }
  }
  batch.clear();
  work_cv_.notify_one();
}

void EventEmitter::flush() {
  std::unique_lock<std::mutex> lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && !delivering_; });
}

void EventEmitter::run() {
  std::vector<Item> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      delivering_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
      work_cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything was delivered
      batch.swap(queue_);
      delivering_ = true;
    }
    for (Item& it : batch) {
      try {
        (*it.callback)(it.ev);
      } catch (...) {
        // The consumer is gone (e.g. the client hung up): stop spending steps on it.
        if (!it.ev.finished) on_failed_(it.ev.request_id);
      }
    }
    batch.clear();
  }
}

}  // namespace greta
