// Fixed pool of worker threads for data-parallel kernels.
//
// Guarantees
// - Threads are created once (in the constructor); run() never creates threads or allocates.
// - run(n_tasks, fn) calls fn(task, thread) exactly once for every task in [0, n_tasks), on
//   the calling thread (thread index 0) and the workers (1 .. size()-1), and returns when all
//   tasks are done. Tasks are claimed dynamically from one atomic ticket, and the caller
//   claims too: a worker that is asleep or descheduled (another process on the core) never
//   holds up a job it has not started; the join waits only for claimed tasks to finish.
// - Dispatch + join cost a few microseconds: workers spin on the job counter for a while
//   after each job (decode issues hundreds of small ops back to back), then sleep on a
//   condition variable so an idle engine burns no CPU. The caller only takes the mutex and
//   notifies when some worker is actually asleep.
// - run() must not be called concurrently from two threads, nor from inside a task.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <thread>
#include <vector>

namespace greta {

class ThreadPool {
 public:
  // n_threads <= 0: std::thread::hardware_concurrency(). The caller counts as one thread.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  template <class F>
  void run(int64_t n_tasks, F&& fn) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || n_threads_ == 1) {  // not worth waking anyone
      for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    run_erased(
        n_tasks, [](void* ctx, int64_t task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using TaskFn = void (*)(void* ctx, int64_t task, int thread);
  void run_erased(int64_t n_tasks, TaskFn fn, void* ctx);
  void worker_main(int thread);
  // Claims and runs tasks of the published job until none are left.
  void work(int thread);

  // Ticket layout: job id (24 bits) | task count (20 bits) | next task index (20 bits).
  // Claiming is a CAS on the whole word, so a thread that read a stale ticket can never take
  // a task of a newer job by mistake, and the task count travels with the index.
  static constexpr int kIdxBits = 20;
  static constexpr int64_t kMaxTasks = (int64_t(1) << kIdxBits) - 1;

  int n_threads_;
  std::vector<std::thread> workers_;
  // Job description: written by run() before the ticket publishes the job; stays unchanged
  // until every task of the job has finished (so a thread holding a claimed task reads it safely).
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t base_ = 0;  // first task of this round (jobs above kMaxTasks run in rounds)
  alignas(64) std::atomic<uint64_t> ticket_{0};
  alignas(64) std::atomic<int64_t> done_{0};         // tasks finished in the current job
  alignas(64) std::atomic<uint32_t> generation_{0};  // bumped once per job
  alignas(64) std::atomic<int> sleepers_{0};         // workers blocked on sleep_cv_
  std::atomic<bool> stop_{false};
  // Sleeping uses a mutex + condition variable: std::atomic::wait/notify in GCC 12's libstdc++
  // was seen to miss the destructor's wake-up (a join that never returned).
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  uint32_t job_id_ = 0;
};

}  // namespace greta
