#include "core/thread_pool.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GRETA_PAUSE() _mm_pause()
#else
#define GRETA_PAUSE() std::this_thread::yield()
#endif

namespace greta {
namespace {
// How long an idle worker polls before sleeping. ~100k pauses is a few hundred microseconds:
// longer than the gap between two ops of a decode step, far shorter than a human notices.
constexpr int kSpinBeforeSleep = 100000;
// The caller waiting for stragglers yields after this many polls, so a worker that shares a
// core with the caller (oversubscribed machine) gets to run.
constexpr int kSpinBeforeYield = 20000;
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
  generation_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::do_tasks(int thread) {
  for (;;) {
    const int64_t t = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (t >= n_tasks_) break;
    fn_(ctx_, t, thread);
  }
}

void ThreadPool::run_erased(int64_t n_tasks, TaskFn fn, void* ctx) {
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  // seq_cst bump, then seq_cst read of sleepers_: pairs with the worker's seq_cst increment
  // of sleepers_ followed by its re-check of generation_ inside wait(), so either the worker
  // sees the new generation or we see it asleep and wake it.
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
  do_tasks(0);
  int spins = 0;
  while (pending_.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpinBeforeYield) {
      GRETA_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::worker_main(int thread) {
  uint32_t seen = generation_.load(std::memory_order_acquire);
  for (;;) {
    int spins = 0;
    uint32_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinBeforeSleep) {
        GRETA_PAUSE();
        continue;
      }
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      generation_.wait(seen, std::memory_order_seq_cst);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      spins = 0;
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    do_tasks(thread);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace greta
