#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GRETA_PAUSE() _mm_pause()
#else
#define GRETA_PAUSE() std::this_thread::yield()
#endif

namespace greta {
namespace {
using Clock = std::chrono::steady_clock;
// An idle worker polls this long before sleeping: longer than the gap between two ops of a
// decode step, far shorter than anything a person notices, and it stops burning the core soon
// after the engine goes idle.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(500);
// The caller waiting for claimed tasks yields after this long, so a worker that shares a core
// with it (oversubscribed machine) gets to run.
constexpr auto kSpinBeforeYield = std::chrono::microseconds(50);

// A ticket packs (job id << 40) | (task count << 20) | next task index; the job id only makes
// tickets of successive jobs differ, so nothing reads it back.
constexpr uint64_t kIdxMask = (uint64_t(1) << 20) - 1;
inline int64_t ticket_count(uint64_t t) { return int64_t((t >> 20) & kIdxMask); }
inline int64_t ticket_index(uint64_t t) { return int64_t(t & kIdxMask); }
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::thread::hardware_concurrency());
  if (n_threads <= 0) n_threads = 1;
  n_threads_ = n_threads;
  workers_.reserve(size_t(n_threads - 1));
  for (int t = 1; t < n_threads; ++t) workers_.emplace_back([this, t] { worker_main(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lk(sleep_mu_);
    sleep_cv_.notify_all();
  }
  for (auto& w : workers_) w.join();
}

void ThreadPool::work(int thread) {
  uint64_t t = ticket_.load(std::memory_order_acquire);
  for (;;) {
    if (ticket_index(t) >= ticket_count(t)) return;
    // acquire on success: the job description written before the ticket was published is visible.
    if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acquire, std::memory_order_acquire)) continue;
    fn_(ctx_, base_ + ticket_index(t), thread);
    done_.fetch_add(1, std::memory_order_release);
    t = ticket_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run_erased(int64_t n_tasks, TaskFn fn, void* ctx) {
  fn_ = fn;
  ctx_ = ctx;
  for (int64_t base = 0; base < n_tasks; base += kMaxTasks) {
    const int64_t count = std::min(kMaxTasks, n_tasks - base);
    base_ = base;
    done_.store(0, std::memory_order_relaxed);
    job_id_ = (job_id_ + 1) & 0xffffffu;
    ticket_.store((uint64_t(job_id_) << 40) | (uint64_t(count) << 20), std::memory_order_release);
    // seq_cst bump, then seq_cst read of sleepers_: pairs with the worker's seq_cst increment of
    // sleepers_ followed by its re-check of generation_ under sleep_mu_, so either the worker sees
    // the new generation or we see it asleep and wake it.
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(sleep_mu_);
      sleep_cv_.notify_all();
    }
    work(0);
    if (done_.load(std::memory_order_acquire) == count) continue;
    const auto t0 = Clock::now();
    int polls = 0;
    while (done_.load(std::memory_order_acquire) != count) {
      if ((++polls & 63) == 0 && Clock::now() - t0 > kSpinBeforeYield) {
        std::this_thread::yield();
      } else {
        GRETA_PAUSE();
      }
    }
  }
}

void ThreadPool::worker_main(int thread) {
  uint32_t seen = 0;  // the value generation_ had at construction
  for (;;) {
    auto idle_since = Clock::now();
    int polls = 0;
    uint32_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if ((++polls & 63) != 0 || Clock::now() - idle_since < kSpinBeforeSleep) {
        GRETA_PAUSE();
        continue;
      }
      {
        std::unique_lock<std::mutex> lk(sleep_mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        sleep_cv_.wait(lk, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      idle_since = Clock::now();
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    work(thread);
  }
}

}  // namespace greta
