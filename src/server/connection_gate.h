// The accept side of the HTTP server: one thread that accepts connections and holds every
// connection that has no complete request yet (new, keep-alive idle, or slow senders), and
// hands a connection to a worker only once its head, and its body when the head gives its
// length, have arrived.
//
// Why not cpp-httplib's own loop: it gives each accepted connection a pool thread for its whole
// life, and its read timeout restarts with every byte, so 64 clients sending a byte a second
// hold all 64 threads forever and even /health stops answering. Here a slow or idle client
// costs a file descriptor and its bytes, never a thread.
//
// Guarantees
// - A request head must be complete within head_timeout of its first byte (408 otherwise), and
//   be at most kMaxHeadBytes (431 otherwise); a body the gate waits for must follow within
//   body_timeout of the head. No clock is restarted by each byte.
// - A connection with no request in progress is closed after idle_timeout.
// - A body longer than max_body (by its Content-Length) is read and dropped, then answered 413.
// - A client address holds at most max_per_client connections; more are answered 429 and
//   closed at once.
// - Requests for /health and /metrics go to their own small pool, so they are answered while
//   every generation thread is busy.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/connection.h"

namespace greta::server {

class Metrics;
struct RequestHead;

constexpr size_t kMaxHeadBytes = 32 * 1024;

struct GateLimits {
  std::chrono::milliseconds head_timeout{10000};
  std::chrono::milliseconds body_timeout{30000};
  size_t max_body = 1 << 20;  // longer bodies are left to the worker (which answers 413)
  std::chrono::milliseconds idle_timeout{15000};
  int max_per_client = 1024;  // 0: no limit
};

class ConnectionGate {
 public:
  // dispatch(conn, probe): a connection whose `pending` bytes hold a complete request head (and
  // its body, when the gate waited for it); probe is true for GET /health and GET /metrics.
  // Called on the gate's thread.
  using Dispatch = std::function<void(std::shared_ptr<Connection>, bool probe)>;

  // metrics (may be null) counts the connections the gate refuses.
  ConnectionGate(int listen_fd, GateLimits limits, Dispatch dispatch, Metrics* metrics);
  ~ConnectionGate();
  ConnectionGate(const ConnectionGate&) = delete;
  ConnectionGate& operator=(const ConnectionGate&) = delete;

  void run();   // accepts and watches connections until stop()
  void stop();  // thread-safe; run() returns soon after and drops the connections it holds

  // Thread-safe: a worker gives back a keep-alive connection after answering a request.
  void give_back(std::shared_ptr<Connection> c);

  int connections_of(const std::string& peer) const;  // open connections of a client address

 private:
  void wake();
  void accept_all();
  void read_from(std::shared_ptr<Connection>& c);  // resets c when the connection is done
  void head_done(Connection& c, const RequestHead& head, Clock::time_point now);
  // `held`: body bytes of the connections kept so far in this pass.
  bool ready_or_expired(std::shared_ptr<Connection>& c, Clock::time_point now, size_t& held);
  void release(const std::string& peer);
  void refuse(int fd, int status, const char* label, const char* message);
  void drop_all();

  const int listen_fd_;
  const GateLimits limits_;
  Dispatch dispatch_;
  Metrics* metrics_;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::vector<std::shared_ptr<Connection>> conns_;  // gate thread only

  mutable std::mutex mu_;  // guards returned_ and per_client_
  std::vector<std::shared_ptr<Connection>> returned_;
  std::map<std::string, int> per_client_;
};

}  // namespace greta::server
