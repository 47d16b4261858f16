// EventEmitter: events reach their callbacks in the order posted, on another thread, and
// a callback that throws reports its request (unless the event was the request's last).
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/event_emitter.h"

namespace greta {
namespace {

TokenEvent event(uint64_t id, int32_t token, bool finished = false) {
  TokenEvent ev;
  ev.request_id = id;
  ev.token = token;
  ev.finished = finished;
  return ev;
}

TEST(EventEmitter, DeliversInOrderOnItsOwnThread) {
  std::mutex mu;
  std::vector<int32_t> seen;
  std::thread::id where;
  auto cb = std::make_shared<const EventCallback>([&](const TokenEvent& ev) {
    std::lock_guard<std::mutex> lk(mu);
    seen.push_back(ev.token);
    where = std::this_thread::get_id();
  });
  std::vector<uint64_t> failed;
  EventEmitter em([&](uint64_t id) { failed.push_back(id); });
  for (int step = 0; step < 50; ++step) {
    std::vector<EventEmitter::Item> batch;
    for (int i = 0; i < 20; ++i) batch.push_back({cb, event(1, step * 20 + i)});
    em.post(batch);
    EXPECT_TRUE(batch.empty());
  }
  em.flush();
  std::lock_guard<std::mutex> lk(mu);
  ASSERT_EQ(seen.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(seen[size_t(i)], i);
  EXPECT_NE(where, std::this_thread::get_id());
  EXPECT_TRUE(failed.empty());
}

TEST(EventEmitter, ThrowingCallbackReportsItsRequestOnce) {
  std::atomic<int> calls{0};
  auto bad = std::make_shared<const EventCallback>([&](const TokenEvent&) {
    ++calls;
    throw std::runtime_error("client went away");
  });
  std::vector<uint64_t> failed;
  EventEmitter em([&](uint64_t id) { failed.push_back(id); });  // called on the emitter thread only
  std::vector<EventEmitter::Item> batch = {{bad, event(7, 1)}, {bad, event(9, -1, /*finished=*/true)}};
  em.post(batch);
  em.flush();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(failed, std::vector<uint64_t>{7});  // the finished event needs no cancel
}

TEST(EventEmitter, DestructorDeliversWhatWasPosted) {
  std::atomic<int> calls{0};
  auto slow = std::make_shared<const EventCallback>([&](const TokenEvent&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ++calls;
  });
  {
    EventEmitter em([](uint64_t) {});
    std::vector<EventEmitter::Item> batch;
    for (int i = 0; i < 10; ++i) batch.push_back({slow, event(1, i)});
    em.post(batch);
  }
  EXPECT_EQ(calls.load(), 10);
}

}  // namespace
}  // namespace greta
