#include "server/sse.h"

#include "server/metrics.h"
#include "server/openai_json.h"

namespace greta::server {

EventChannel::EventChannel(int n_choices, Metrics* metrics)
    : unfinished_(n_choices),
      metrics_(metrics),
      start_(std::chrono::steady_clock::now()),
      last_token_(size_t(n_choices)),
      got_token_(size_t(n_choices), false) {}

EventCallback EventChannel::callback(int index) {
  return [self = shared_from_this(), index](const TokenEvent& ev) { self->push(index, ev); };
}

void EventChannel::push(int index, const TokenEvent& ev) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ev.token >= 0 && metrics_) {
      const size_t i = size_t(index);
      if (!got_token_[i]) metrics_->observe_ttft(std::chrono::duration<double>(now - start_).count());
      else metrics_->observe_itl(std::chrono::duration<double>(now - last_token_[i]).count());
      got_token_[i] = true;
      last_token_[i] = now;
    }
    queue_.push_back({index, ev});
    if (ev.finished) --unfinished_;
  }
  cv_.notify_all();
}

std::vector<EventChannel::Item> EventChannel::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); });
  std::vector<Item> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

bool EventChannel::drained() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unfinished_ == 0 && queue_.empty();
}

std::string sse_event(const nlohmann::json& j) { return "data: " + dump(j) + "\n\n"; }
std::string sse_done() { return "data: [DONE]\n\n"; }
std::string sse_comment() { return ": keep-alive\n\n"; }

}  // namespace greta::server
