// BackgroundJob: the job runs on another thread while the caller goes on, wait() returns once
// it finished and rethrows its exception, jobs never overlap, and destruction waits.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "engine/background_job.h"

namespace greta {
namespace {

TEST(BackgroundJob, RunsBesideTheCallerAndWaitSeesItsWork) {
  BackgroundJob job;
  std::atomic<bool> go{false};
  int result = 0;
  const std::thread::id caller = std::this_thread::get_id();
  std::thread::id ran_on;
  job.start([&] {
    while (!go) std::this_thread::yield();  // finishes only once the caller has moved on
    ran_on = std::this_thread::get_id();
    result = 42;
  });
  go = true;
  job.wait();
  EXPECT_EQ(result, 42);
  EXPECT_NE(ran_on, caller);
  job.wait();  // nothing outstanding: returns at once
}

TEST(BackgroundJob, WaitRethrowsOnceAndTheWorkerKeepsServing) {
  BackgroundJob job;
  job.start([] { throw std::runtime_error("mask failed"); });
  EXPECT_THROW(job.wait(), std::runtime_error);
  job.wait();
  int n = 0;
  job.start([&] { n = 1; });
  job.wait();
  EXPECT_EQ(n, 1);
}

TEST(BackgroundJob, JobsNeverOverlapAndDestructionWaits) {
  std::atomic<int> running{0}, max_running{0}, done{0};
  {
    BackgroundJob job;
    for (int i = 0; i < 20; ++i)
      job.start([&] {
        max_running = std::max(max_running.load(), ++running);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        --running;
        ++done;
      });
  }
  EXPECT_EQ(max_running.load(), 1);
  EXPECT_EQ(done.load(), 20);
}

}  // namespace
}  // namespace greta
