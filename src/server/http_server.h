// The HTTP server around the routes: bind address, API-key check, body size limit,
// OpenAI-shaped bodies for httplib's own errors (404, 413, ...), request metrics, and the
// limits that keep it serving under abuse.
//
// cpp-httplib parses and answers each request (routing, handlers, chunked streams), but the
// connections are ours (cpp-httplib 0.11 ties a pool thread to each connection for its whole
// life): a ConnectionGate thread accepts them and holds them until a complete request has
// arrived, then a worker runs that one request through httplib's parser and router and gives
// the connection back.
//
// Guarantees
// - Slow, idle or half-sent requests cost no worker thread (a chunked or Expect: 100-continue
//   body is the exception: a worker reads it, under the body deadline); their limits (head,
//   body, idle, connections per client address) are in HttpOptions and ConnectionGate.
// - /health and /metrics have their own threads: they answer while every worker is busy.
// - Refused at once, connection closed: Content-Length together with Transfer-Encoding, or
//   more than one Content-Length (400; the ways requests are smuggled past a proxy).
// - bind() fails with the system's reason when the address is in use: the socket is not
//   shared with another process (no SO_REUSEPORT).
// - stop() ends streams in flight with an error event and [DONE], answers waiting requests 503,
//   and run() returns once every worker is done.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "server/routes.h"

namespace httplib {
class ThreadPool;
}

namespace greta::server {

class ConnectionGate;
struct Connection;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;      // 0: any free port
  std::string api_key;  // "": no authentication
  size_t max_body_bytes = 1 << 20;
  int threads = 64;                   // requests handled at once (a stream holds one until it ends)
  int head_timeout_s = 10;            // a request head must arrive within this, from its first byte
  int body_timeout_s = 30;            // its body within this, from the end of the head
  int idle_timeout_s = 15;            // a connection with no request in progress is closed after this
  int write_timeout_s = 10;           // a client that accepts no bytes for this long is dropped
  int max_client_connections = 1024;  // open connections per client address (0: no limit)
};

class HttpServer {
 public:
  HttpServer(const ServerContext& ctx, HttpOptions opt);
  ~HttpServer();
  // Binds the socket; returns the port (useful with port 0). Throws greta::Error when it cannot.
  int bind();
  void run();   // serves until stop(); call bind() first
  void stop();  // thread-safe

 private:
  class Parser;
  void serve(std::shared_ptr<Connection> c);  // one request, on a worker thread
  void join_workers();

  ServerContext ctx_;
  HttpOptions opt_;
  std::atomic<bool> stopping_{false};
  GrammarCache grammars_;  // the routes' unless the context brings its own
  std::unique_ptr<Parser> http_;
  int listen_fd_ = -1;  // the listening socket, recorded by the socket-options hook
  std::unique_ptr<ConnectionGate> gate_;
  std::unique_ptr<httplib::ThreadPool> workers_, probes_;
};

}  // namespace greta::server
