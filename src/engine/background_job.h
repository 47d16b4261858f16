// One worker thread that runs a job next to the engine thread: the constrained sequences'
// token masks while the step's forward runs. A persistent thread, so a step pays a wake-up
// rather than a thread start.
//
// Guarantees
// - At most one job at a time: start() first waits for the previous one.
// - wait() returns once the last started job has finished, rethrowing what it threw; with no
//   job outstanding it returns at once.
// - The destructor waits for a running job, then ends the thread.
#pragma once
#include <condition_variable>
#include <exception>
#include <utility>
#include <functional>
#include <mutex>
#include <thread>

namespace greta {

class BackgroundJob {
 public:
  BackgroundJob();
  ~BackgroundJob();
  BackgroundJob(const BackgroundJob&) = delete;
  BackgroundJob& operator=(const BackgroundJob&) = delete;

  void start(std::function<void()> job);
  void wait();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool busy_ = false;  // a job was started and has not finished
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: started once the state above exists
};

}  // namespace greta
